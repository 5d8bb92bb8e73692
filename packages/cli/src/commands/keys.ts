import { createKeyStore, openDatabase, type ApiKeyInfo, type KeyGrants, type KeyScope } from '@agentbox/host';
import { AgentboxError } from '@agentbox/protocol';
import { formatTable, writeJson } from '../output.js';
import { dataDirOf } from './serve.js';

function withKeys<T>(
  data: string | undefined,
  fn: (keys: ReturnType<typeof createKeyStore>) => T,
  options: { existing: boolean } = { existing: true },
): T {
  const db = openDatabase(dataDirOf(data), options);
  try {
    return fn(createKeyStore(db));
  } finally {
    db.close();
  }
}

const when = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z'));

export function formatKeys(keys: ApiKeyInfo[]): string {
  if (keys.length === 0) return 'no API keys (`agentbox serve` makes an admin key on first start)';
  const limit = (n: number | null) => (n === null ? '-' : String(n));
  const dollars = (n: number) => `$${n.toFixed(2)}`;
  const rows = keys.map((k) => [
    k.id,
    k.scope,
    `${k.prefix}…`,
    k.name,
    when(k.createdAt),
    when(k.lastUsedAt),
    k.revokedAt ? `revoked ${when(k.revokedAt)}` : 'active',
    k.scope === 'admin' ? '*' : k.grants.repos.join(',') || '-',
    limit(k.grants.maxBoxes),
    limit(k.grants.maxTasks),
    k.grants.maxMemoryMib === null ? '-' : `${k.grants.maxMemoryMib} MiB`,
    k.grants.maxDiskGib === null ? '-' : `${k.grants.maxDiskGib} GiB`,
    k.grants.maxSpendUsd === null
      ? dollars(k.spentUsd)
      : `${dollars(k.spentUsd)} of ${dollars(k.grants.maxSpendUsd)}`,
  ]);
  const header = [
    'ID',
    'SCOPE',
    'PREFIX',
    'NAME',
    'CREATED',
    'LAST USED',
    'STATUS',
    'REPOS',
    'MAX BOXES',
    'MAX TASKS',
    'MAX MEMORY',
    'MAX DISK',
    'SPENT',
  ];
  return formatTable(header, rows);
}

export function keysCreate(options: {
  name: string;
  scope: string;
  data?: string;
  json: boolean;
  grants: Partial<KeyGrants>;
}): number {
  if (options.scope !== 'admin' && options.scope !== 'user') {
    throw new AgentboxError('invalid_request', '--scope must be admin or user');
  }
  // A key may be made before the daemon's first start: this one makes the store.
  const { secret, key } = withKeys(
    options.data,
    (keys) => keys.create({ name: options.name, scope: options.scope as KeyScope, grants: options.grants }),
    { existing: false },
  );
  if (options.json) writeJson({ ...key, key: secret });
  else process.stdout.write(`${secret}\n`);
  if (!options.json)
    process.stderr.write(`agentbox: made ${key.scope} key ${key.id}; it is shown only this once\n`);
  return 0;
}

export function keysList(options: { data?: string; json: boolean }): number {
  const list = withKeys(options.data, (keys) => keys.list());
  if (options.json) writeJson({ keys: list });
  else process.stdout.write(`${formatKeys(list)}\n`);
  return 0;
}

export function keysRevoke(options: { id: string; data?: string }): number {
  const key = withKeys(options.data, (keys) => keys.revoke(options.id));
  process.stdout.write(`agentbox: revoked ${key.id} (${key.name})\n`);
  return 0;
}

/**
 * Starts a key's spend count again. A running daemon takes it at the key's next model call (charges
 * it had not yet written, at most a second's, land on the new count).
 */
export function keysResetSpend(options: { id: string; data?: string; json: boolean }): number {
  const key = withKeys(options.data, (keys) => keys.resetSpend(options.id));
  if (options.json) writeJson(key);
  else
    process.stdout.write(
      `agentbox: ${key.id} (${key.name}) spend count starts again at ${when(key.spentSince)}\n`,
    );
  return 0;
}

/** Changes a key's grants; a running daemon applies them from the key's next request. */
export function keysUpdate(options: {
  id: string;
  data?: string;
  json: boolean;
  grants: Partial<KeyGrants>;
}): number {
  const { grants } = options;
  if (Object.keys(grants).length === 0) {
    throw new AgentboxError(
      'invalid_request',
      'nothing to change: pass --repo, --no-repos, --max-boxes, --max-tasks, --max-memory, --max-disk or --max-spend',
    );
  }
  const key = withKeys(options.data, (keys) => keys.update(options.id, grants));
  if (options.json) writeJson(key);
  else process.stdout.write(`${formatKeys([key])}\n`);
  return 0;
}
