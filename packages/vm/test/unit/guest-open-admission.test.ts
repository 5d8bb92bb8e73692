import { describe, expect, it } from 'vitest';
import { admitGuestOpen, MAX_GUEST_CHANNELS, MAX_PENDING_REFUSALS } from '../../src/guest-channels.js';

describe('admitGuestOpen', () => {
  it.each([
    [{ valid: true, held: 0, pendingRefusals: 0 }, { action: 'accept' }],
    [{ valid: true, held: MAX_GUEST_CHANNELS - 1, pendingRefusals: 0 }, { action: 'accept' }],
    [
      { valid: true, held: MAX_GUEST_CHANNELS, pendingRefusals: 0 },
      { action: 'refuse', reason: 'too many channels' },
    ],
    [
      { valid: false, held: 0, pendingRefusals: 0 },
      { action: 'refuse', reason: 'unknown channel type' },
    ],
    [
      { valid: true, held: MAX_GUEST_CHANNELS, pendingRefusals: MAX_PENDING_REFUSALS - 1 },
      { action: 'refuse', reason: 'too many channels' },
    ],
    [{ valid: true, held: MAX_GUEST_CHANNELS, pendingRefusals: MAX_PENDING_REFUSALS }, { action: 'drop' }],
    [{ valid: false, held: 0, pendingRefusals: MAX_PENDING_REFUSALS }, { action: 'drop' }],
    // Pending refusals never stop an open the guest still has room for.
    [{ valid: true, held: 1, pendingRefusals: MAX_PENDING_REFUSALS }, { action: 'accept' }],
  ])('%o → %o', (state, verdict) => {
    expect(admitGuestOpen(state)).toEqual(verdict);
  });
});
