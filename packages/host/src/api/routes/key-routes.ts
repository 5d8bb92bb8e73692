import {
  AgentboxError,
  ApiKeyListSchema,
  ApiKeyParamsSchema,
  ApiKeySchema,
  CreateApiKeyRequestSchema,
  CreatedApiKeySchema,
  UpdateApiKeyGrantsRequestSchema,
} from '@agentbox/protocol';
import type { ApiKeyInfo, KeyStore } from '../../store/key-store.js';
import { defineRoute, type RouteDef } from '../route.js';

export interface KeyRouteDeps {
  keys: Pick<KeyStore, 'list' | 'get' | 'create' | 'update' | 'revoke' | 'resetSpend'>;
  /** Drops the daemon's charges of the key not yet written (they belong to the count that ends). */
  spendReset?: (keyId: string) => void;
}

const KEYS = ['keys'];

/** `agentbox keys` over HTTP, for an operator with an admin key and no shell on the host. */
export function keyRoutes(deps: KeyRouteDeps): RouteDef[] {
  const existing = (id: string): ApiKeyInfo => {
    const key = deps.keys.get(id);
    if (!key) throw new AgentboxError('key_not_found', `no API key with id ${id}`);
    return key;
  };
  return [
    defineRoute({
      method: 'GET',
      url: '/v1/keys',
      operationId: 'listKeys',
      summary: 'Every API key, oldest first, with its grants (admin); never a secret',
      tags: KEYS,
      auth: 'admin',
      responses: { 200: { description: 'The keys', schema: ApiKeyListSchema } },
      errors: ['unauthorized', 'forbidden'],
      handler: () => Promise.resolve({ keys: deps.keys.list() }),
    }),
    defineRoute({
      method: 'POST',
      url: '/v1/keys',
      operationId: 'createKey',
      summary: 'Make an API key (admin); its secret is in this answer only',
      tags: KEYS,
      auth: 'admin',
      body: CreateApiKeyRequestSchema,
      responses: { 201: { description: 'The key and its secret', schema: CreatedApiKeySchema } },
      errors: ['invalid_request', 'unauthorized', 'forbidden'],
      handler: ({ body }) => {
        const { secret, key } = deps.keys.create({
          name: body.name,
          scope: body.scope,
          ...(body.grants ? { grants: body.grants } : {}),
        });
        return Promise.resolve({ ...key, key: secret });
      },
    }),
    defineRoute({
      method: 'PUT',
      url: '/v1/keys/:id/grants',
      operationId: 'updateKeyGrants',
      summary: "Change a key's grants (admin): fields left out stay; its boxes' egress follows within 5 s",
      tags: KEYS,
      auth: 'admin',
      params: ApiKeyParamsSchema,
      body: UpdateApiKeyGrantsRequestSchema,
      responses: { 200: { description: 'The key', schema: ApiKeySchema } },
      errors: ['invalid_request', 'unauthorized', 'forbidden', 'key_not_found'],
      handler: ({ params, body }) => {
        existing(params.id);
        return Promise.resolve(deps.keys.update(params.id, body));
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/v1/keys/:id/spend/reset',
      operationId: 'resetKeySpend',
      summary:
        "Start a key's spend count again (admin), e.g. for a new billing period: its cap holds against what its boxes spend from now",
      tags: KEYS,
      auth: 'admin',
      params: ApiKeyParamsSchema,
      responses: { 200: { description: 'The key, `spentUsd` 0 since now', schema: ApiKeySchema } },
      errors: ['unauthorized', 'forbidden', 'key_not_found'],
      handler: ({ params }) => {
        existing(params.id);
        deps.spendReset?.(params.id);
        return Promise.resolve(deps.keys.resetSpend(params.id));
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: '/v1/keys/:id',
      operationId: 'revokeKey',
      summary:
        'Revoke a key (admin): its requests get 401 at once; its streams, tasks and egress end within 5 s',
      tags: KEYS,
      auth: 'admin',
      params: ApiKeyParamsSchema,
      responses: { 200: { description: 'The revoked key', schema: ApiKeySchema } },
      errors: ['unauthorized', 'forbidden', 'key_not_found', 'invalid_state'],
      handler: ({ params }) => {
        existing(params.id);
        return Promise.resolve(deps.keys.revoke(params.id));
      },
    }),
  ];
}
