/** Just enough TOML to write Codex config: strings, numbers, booleans, arrays and (inline) tables. */

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

export function tomlKey(key: string): string {
  return BARE_KEY.test(key) ? key : JSON.stringify(key);
}

/** A JSON string is a valid TOML basic string (same escapes); other values map one to one. */
export function tomlValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(', ')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined && v !== null);
    return `{ ${entries.map(([k, v]) => `${tomlKey(k)} = ${tomlValue(v)}`).join(', ')} }`;
  }
  throw new Error(`no TOML form for ${typeof value}`);
}

/** `[a.b]` followed by `key = value` lines. */
export function tomlTable(path: readonly string[], values: Record<string, unknown>): string {
  const lines = [`[${path.map(tomlKey).join('.')}]`];
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined && value !== null) lines.push(`${tomlKey(key)} = ${tomlValue(value)}`);
  }
  return `${lines.join('\n')}\n`;
}
