import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { createAuditStore, createBoxStore, openDatabase } from '@agentbox/host';
import type { EgressAuditRecord } from '@agentbox/protocol';
import { writeJson } from '../../src/output.js';
import { cli, type CliResult } from '../helpers.js';

/** The --json contract: exit 0, one JSON object (never a bare array) and a newline, nothing else. */
function oneObject(r: CliResult): Record<string, unknown> {
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout.endsWith('}\n')).toBe(true);
  const value = JSON.parse(r.stdout) as unknown;
  expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true);
  return value as Record<string, unknown>;
}

const BOX = 'box-aaaaaaaaaa';

function record(host: string): EgressAuditRecord {
  return {
    boxId: BOX,
    ts: '2024-01-01T00:00:00.000Z',
    host,
    port: 443,
    decision: 'deny',
    code: 'domain_not_allowed',
    reason: `${host} is not allowed`,
    bytesUp: 0,
    bytesDown: 0,
    placeholderLeak: false,
  };
}

describe('--json prints one JSON object, also when there is nothing to list', () => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-json-'));
  const db = openDatabase(data);
  createBoxStore(db).insert(
    {
      id: BOX,
      ownerKeyId: 'k',
      userId: null,
      runtime: 'bash',
      memoryMib: 512,
      vcpus: 1,
      diskGib: 2,
      ttlSeconds: null,
      labels: {},
      dir: path.join(data, 'boxes', BOX),
      egressPolicy: null,
    },
    { maxLive: 8 },
  );
  db.close();
  afterAll(() => fs.rmSync(data, { recursive: true, force: true }));

  it('keys list: {"keys": [...]}', async () => {
    expect(oneObject(await cli(['keys', 'list', '--data', data, '--json']))).toEqual({ keys: [] });
    expect((await cli(['keys', 'create', '--name', 'ci', '--data', data])).code).toBe(0);
    const { keys } = oneObject(await cli(['keys', 'list', '--data', data, '--json'])) as {
      keys: { name: string }[];
    };
    expect(keys.map((k) => k.name)).toEqual(['ci']);
  });

  it('audit: {"records": [...], "next": SEQ|null}, as the HTTP API pages them', async () => {
    const audit = (...flags: string[]) => cli(['audit', BOX, '--data', data, '--json', ...flags]);
    expect(oneObject(await audit())).toEqual({ records: [], next: null });

    const db = openDatabase(data);
    for (const host of ['a.example', 'b.example', 'c.example']) createAuditStore(db).record(record(host));
    db.close();
    type Page = { records: (EgressAuditRecord & { seq: number })[]; next: number | null };
    const all = oneObject(await audit()) as Page;
    expect(all.records.map((r) => r.host)).toEqual(['a.example', 'b.example', 'c.example']);
    expect(all.records[0]).toMatchObject({ ...record('a.example'), seq: expect.any(Number) as number });
    expect(all.next).toBeNull();

    const first = oneObject(await audit('--limit', '2')) as Page;
    expect(first.records.map((r) => r.host)).toEqual(['a.example', 'b.example']);
    expect(first.next).toBe(first.records[1]!.seq);
    const rest = oneObject(await audit('--after', String(first.next))) as Page;
    expect(rest).toEqual({ records: [all.records[2]], next: null });
  });

  it('library list: {"items": [...]}', async () => {
    expect(oneObject(await cli(['library', 'list', '--data', data, '--json']))).toEqual({ items: [] });
    const file = path.join(data, 'RULES.md');
    fs.writeFileSync(file, '# rules\n');
    expect((await cli(['library', 'add', 'rules', 'house', file, '--data', data])).code).toBe(0);
    const { items } = oneObject(await cli(['library', 'list', '--data', data, '--json'])) as {
      items: { kind: string; name: string }[];
    };
    expect(items).toMatchObject([{ kind: 'rules', name: 'house' }]);
  });

  it('project ls: {"boxes": [...]}', async () => {
    const home = path.join(data, 'home');
    const env = { AGENTBOX_HOME: home };
    expect(oneObject(await cli(['project', 'ls', '--json'], { env }))).toEqual({ boxes: [] });
    const dir = path.join(home, 'boxes', 'proj-0123456789ab');
    fs.mkdirSync(dir, { recursive: true });
    const state = { root: '/src/widget', pid: 2 ** 22 + 1, startTime: 1, configHash: 'x', createdAt: '' };
    fs.writeFileSync(path.join(dir, 'project.json'), JSON.stringify(state));
    expect(oneObject(await cli(['project', 'ls', '--json'], { env }))).toEqual({
      boxes: [{ id: 'proj-0123456789ab', root: '/src/widget', running: false }],
    });
  });

  it('writeJson writes the document and one newline', () => {
    const out = new PassThrough();
    writeJson({ boxes: [] }, out);
    expect(String(out.read())).toBe('{\n  "boxes": []\n}\n');
  });
});
