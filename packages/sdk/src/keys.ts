import type { ApiKey, ApiKeyGrantsUpdate } from '@agentbox/protocol';
import type { HttpTransport, RequestOpts } from './http.js';

/** What a key may use beyond its own boxes (fields left out of an update stay): the protocol's shape. */
export type KeyGrantsInput = ApiKeyGrantsUpdate;

export interface CreateKeyOpts extends RequestOpts {
  name?: string;
  scope?: 'admin' | 'user';
  grants?: KeyGrantsInput;
}

const keyPath = (id: string) => `/v1/keys/${encodeURIComponent(id)}`;

/** `client.keys`: API keys and their grants (every call needs an admin key). */
export class Keys {
  constructor(private readonly http: HttpTransport) {}

  async list(opts: RequestOpts = {}): Promise<ApiKey[]> {
    const body = await this.http.json<{ keys: ApiKey[] }>({ method: 'GET', path: '/v1/keys', ...opts });
    return body.keys;
  }

  /** Makes a key; its secret (`key`) is in this answer only. */
  create(opts: CreateKeyOpts = {}): Promise<ApiKey & { key: string }> {
    const { name, scope, grants, ...rest } = opts;
    return this.http.json<ApiKey & { key: string }>({
      method: 'POST',
      path: '/v1/keys',
      json: { ...(name ? { name } : {}), ...(scope ? { scope } : {}), ...(grants ? { grants } : {}) },
      ...rest,
    });
  }

  /** Changes a key's grants; its boxes' egress follows within the daemon's key check (5 s). */
  updateGrants(id: string, grants: KeyGrantsInput, opts: RequestOpts = {}): Promise<ApiKey> {
    return this.http.json<ApiKey>({ method: 'PUT', path: `${keyPath(id)}/grants`, json: grants, ...opts });
  }

  /** Starts a key's spend count again (a new billing period): `spentUsd` 0, `spentSince` now. */
  resetSpend(id: string, opts: RequestOpts = {}): Promise<ApiKey> {
    return this.http.json<ApiKey>({ method: 'POST', path: `${keyPath(id)}/spend/reset`, ...opts });
  }

  /** Revokes a key: its requests are refused at once, its streams, tasks and egress end within 5 s. */
  revoke(id: string, opts: RequestOpts = {}): Promise<ApiKey> {
    return this.http.json<ApiKey>({ method: 'DELETE', path: keyPath(id), ...opts });
  }
}
