import { stat, readFile } from 'node:fs/promises';
import { inspect } from 'node:util';
import { AgentboxError, SecretNameSchema } from '@agentbox/protocol';

/**
 * Host-side secret store. Values live in this object's memory only: they are never logged,
 * serialized (toJSON and inspect show names), persisted by the gateway or sent to a guest. A box
 * sees placeholders instead (see placeholders.ts).
 */

export const SECRET_ENV_PREFIX = 'AGENTBOX_SECRET_';

export type SecretChangeListener = (name: string) => void;

export class SecretStore {
  readonly #values = new Map<string, string>();
  readonly #listeners = new Set<SecretChangeListener>();

  /** Secrets from `AGENTBOX_SECRET_<NAME>` variables, e.g. AGENTBOX_SECRET_ANTHROPIC_API_KEY. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): SecretStore {
    const store = new SecretStore();
    for (const [key, value] of Object.entries(env)) {
      if (!key.startsWith(SECRET_ENV_PREFIX) || value === undefined || value === '') continue;
      store.set(key.slice(SECRET_ENV_PREFIX.length), value);
    }
    return store;
  }

  /**
   * Secrets from a JSON file `{ "NAME": "value", ... }` that only its owner can read (mode 0600 or
   * stricter); a file others can read is refused rather than trusted.
   */
  static async fromFile(path: string): Promise<SecretStore> {
    const info = await stat(path).catch((err: unknown) => {
      throw new AgentboxError('invalid_request', `cannot read the secrets file ${path}`, { cause: err });
    });
    if ((info.mode & 0o077) !== 0) {
      throw new AgentboxError(
        'invalid_request',
        `the secrets file ${path} is readable by others (mode ${(info.mode & 0o777).toString(8)}); run chmod 600 ${path}`,
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(path, 'utf8'));
    } catch {
      // The parser's message can quote the file's content, so it is not passed on.
      throw new AgentboxError('invalid_request', `the secrets file ${path} is not valid JSON`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new AgentboxError(
        'invalid_request',
        `the secrets file ${path} must hold a JSON object of NAME: value`,
      );
    }
    const store = new SecretStore();
    for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
      if (typeof value !== 'string') {
        throw new AgentboxError('invalid_request', `secret ${name} in ${path} is not a string`);
      }
      store.set(name, value);
    }
    return store;
  }

  /** Adds or replaces a secret. Names are UPPER_SNAKE_CASE (the variable the box will see). */
  set(name: string, value: string): void {
    if (!SecretNameSchema.safeParse(name).success) {
      throw new AgentboxError('invalid_request', `secret name ${name} must be UPPER_SNAKE_CASE`);
    }
    if (value.length === 0 || /[\r\n\0]/.test(value)) {
      throw new AgentboxError('invalid_request', `secret ${name} is empty or contains a line break`);
    }
    this.#values.set(name, value);
    for (const listener of this.#listeners) listener(name);
  }

  delete(name: string): boolean {
    const had = this.#values.delete(name);
    if (had) for (const listener of this.#listeners) listener(name);
    return had;
  }

  has(name: string): boolean {
    return this.#values.has(name);
  }

  names(): string[] {
    return [...this.#values.keys()].sort();
  }

  /** The real value. Only the gateway's injection path calls this, at the moment of sending. */
  reveal(name: string): string | undefined {
    return this.#values.get(name);
  }

  /** Called with the name (never the value) whenever a secret changes, e.g. after an OAuth refresh. */
  onChange(listener: SecretChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  toJSON(): { secrets: string[] } {
    return { secrets: this.names() };
  }

  [inspect.custom](): string {
    return `SecretStore { ${this.names().join(', ')} }`;
  }
}
