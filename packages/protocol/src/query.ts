import { z } from 'zod';

const WHOLE_NUMBER = 'must be a whole number';

/**
 * A whole number from a query string, from `min` up to `max`: `?limit=abc` is refused as "limit:
 * must be a whole number", not zod's "expected number, received NaN".
 */
export function queryInteger(min: number, max = Number.MAX_SAFE_INTEGER) {
  return z.coerce
    .number({ error: WHOLE_NUMBER })
    .int({ error: WHOLE_NUMBER })
    .min(min, { error: `must be at least ${min}` })
    .max(max, { error: `must be at most ${max}` });
}
