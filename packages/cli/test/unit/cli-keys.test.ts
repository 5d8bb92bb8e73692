import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers.js';

describe('agentbox keys', () => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-keys-'));
  afterAll(() => fs.rmSync(data, { recursive: true, force: true }));

  it('creates a key shown once, lists keys without secrets, revokes by id', async () => {
    const created = await cli(['keys', 'create', '--name', 'ci', '--scope', 'admin', '--data', data]);
    expect(created.code).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^abk_[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toMatch(/made admin key key_\w+; it is shown only this once/);

    const json = await cli(['keys', 'create', '--data', data, '--json']);
    const user = JSON.parse(json.stdout) as { id: string; scope: string; key: string };
    expect(user.scope).toBe('user');

    const list = await cli(['keys', 'list', '--data', data, '--json']);
    expect(list.stdout).not.toContain(secret);
    expect(list.stdout).not.toContain(user.key);
    const { keys } = JSON.parse(list.stdout) as {
      keys: { id: string; name: string; revokedAt: number | null }[];
    };
    expect(keys.map((k) => k.name)).toEqual(['ci', 'api key']);

    const revoked = await cli(['keys', 'revoke', user.id, '--data', data]);
    expect(revoked.code).toBe(0);
    const table = await cli(['keys', 'list', '--data', data]);
    expect(table.stdout).toMatch(new RegExp(`${user.id}\\s+user.*revoked`));
    expect(fs.readFileSync(path.join(data, 'agentbox.db')).includes(Buffer.from(secret))).toBe(false);
  });

  it('grants repositories and limits at create, changes them with update, shows them in list', async () => {
    const made = await cli([
      'keys',
      'create',
      '--name',
      'tenant',
      '--repo',
      'Acme/*',
      '--repo',
      'solo/one',
      '--max-boxes',
      '2',
      '--data',
      data,
      '--json',
    ]);
    expect(made.code, made.stderr).toBe(0);
    const key = JSON.parse(made.stdout) as { id: string; grants: object };
    expect(key.grants).toEqual({
      repos: ['acme/*', 'solo/one'],
      maxBoxes: 2,
      maxTasks: null,
      maxMemoryMib: null,
      maxDiskGib: null,
      maxSpendUsd: null,
    });

    const updated = await cli([
      'keys',
      'update',
      key.id,
      '--max-tasks',
      '5',
      '--max-boxes',
      'none',
      '--max-spend',
      '12.5',
      '--max-memory',
      '4096',
      '--max-disk',
      '40',
      '--data',
      data,
      '--json',
    ]);
    expect(updated.code, updated.stderr).toBe(0);
    expect(JSON.parse(updated.stdout)).toMatchObject({
      grants: {
        repos: ['acme/*', 'solo/one'],
        maxBoxes: null,
        maxTasks: 5,
        maxMemoryMib: 4096,
        maxDiskGib: 40,
        maxSpendUsd: 12.5,
      },
      spentUsd: 0,
    });
    const replaced = await cli(['keys', 'update', key.id, '--repo', 'other/x', '--data', data]);
    expect(replaced.stdout).toMatch(
      new RegExp(
        `${key.id}\\s+user\\s.*\\sactive\\s+other/x\\s+-\\s+5\\s+4096 MiB\\s+40 GiB\\s+\\$0\\.00 of \\$12\\.50$`,
        'm',
      ),
    );
    const reset = await cli(['keys', 'reset-spend', key.id, '--data', data]);
    expect(reset.code, reset.stderr).toBe(0);
    expect(reset.stdout).toMatch(
      new RegExp(`^agentbox: ${key.id} \\(tenant\\) spend count starts again at \\d{4}-`),
    );
    const resetJson = await cli(['keys', 'reset-spend', key.id, '--data', data, '--json']);
    expect(JSON.parse(resetJson.stdout)).toMatchObject({
      id: key.id,
      spentUsd: 0,
      spentSince: expect.any(Number),
    });
    const noKey = await cli(['keys', 'reset-spend', 'key_nope', '--data', data]);
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toBe('agentbox: no API key with id key_nope\n');
    const uncapped = await cli(['keys', 'update', key.id, '--max-spend', 'none', '--data', data, '--json']);
    expect(JSON.parse(uncapped.stdout)).toMatchObject({ grants: { maxSpendUsd: null } });
    const cleared = await cli(['keys', 'update', key.id, '--no-repos', '--data', data, '--json']);
    expect(JSON.parse(cleared.stdout)).toMatchObject({ grants: { repos: [] } });

    for (const [args, line] of [
      [
        ['keys', 'update', key.id],
        'nothing to change: pass --repo, --no-repos, --max-boxes, --max-tasks, --max-memory, --max-disk or --max-spend',
      ],
      [['keys', 'update', key.id, '--repo', 'a/b', '--no-repos'], '--repo and --no-repos cannot go together'],
      [
        ['keys', 'update', key.id, '--repo', 'acme'],
        '--repo acme: a GitHub repository grant: owner/name, owner/* or *',
      ],
      [['keys', 'update', 'key_nope', '--max-tasks', '1'], 'no API key with id key_nope'],
    ] as const) {
      const r = await cli([...args, '--data', data]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toBe(`agentbox: ${line}\n`);
    }
    const bad = await cli(['keys', 'update', key.id, '--max-boxes', '-1', '--data', data]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--max-boxes must be a whole number/);
    const disk = await cli(['keys', 'update', key.id, '--max-disk', '1.5', '--data', data]);
    expect(disk.code).toBe(2);
    expect(disk.stderr).toMatch(/--max-disk must be a whole number/);
    const memory = await cli(['keys', 'update', key.id, '--max-memory', 'none', '--data', data, '--json']);
    expect(JSON.parse(memory.stdout)).toMatchObject({ grants: { maxMemoryMib: null, maxDiskGib: 40 } });
    const spend = await cli(['keys', 'update', key.id, '--max-spend', 'lots', '--data', data]);
    expect(spend.code).toBe(2);
    expect(spend.stderr).toMatch(/--max-spend must be a number ≥ 0/);
    // About twenty CLI processes one after another: 14-17 s in CI, near the default 20 s timeout.
  }, 60_000);

  it('says clearly what is wrong, in one line', async () => {
    const again = await cli(['keys', 'revoke', 'key_nope', '--data', data]);
    expect(again.code).toBe(2);
    expect(again.stderr).toBe('agentbox: no API key with id key_nope\n');
    const scope = await cli(['keys', 'create', '--scope', 'root', '--data', data]);
    expect(scope.stderr).toBe('agentbox: --scope must be admin or user\n');
    // Reading a store that is not there refuses, and makes nothing (a mistyped --data).
    const typo = path.join(data, 'typo', 'x');
    for (const args of [
      ['keys', 'list', '--data', typo],
      ['audit', 'box-0000000000', '--data', typo],
    ]) {
      const r = await cli(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(
        `agentbox: no agentbox state in ${typo} (\`agentbox serve\` makes it there; --data or AGENTBOX_HOME picks another)\n`,
      );
    }
    expect(fs.existsSync(path.join(data, 'typo'))).toBe(false);
    const port = await cli(['serve', '--port', 'http']);
    expect(port.code).toBe(2);
    expect(port.stderr).toMatch(/--port must be a whole number/);
  });
});
