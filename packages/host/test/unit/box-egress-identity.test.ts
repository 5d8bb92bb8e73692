import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createBoxStore, openDatabase, type Db } from '../../src/index.js';

const identity = {
  ca: { certPem: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n', keyPem: 'key' },
  placeholders: { ANTHROPIC_API_KEY: `agentbox-ph-${'a'.repeat(32)}` },
};

describe("a box's kept egress identity", () => {
  let dir: string;
  let db: Db;
  afterEach(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is there for the next daemon while the box lives, and goes with the box', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-identity-'));
    db = openDatabase(dir);
    const store = createBoxStore(db);
    store.insert(
      {
        id: 'box-identity01',
        ownerKeyId: 'k',
        userId: null,
        runtime: 'bash',
        memoryMib: 512,
        vcpus: 1,
        diskGib: 2,
        ttlSeconds: null,
        labels: {},
        dir,
        egressPolicy: null,
      },
      { maxLive: 10 },
    );
    expect(store.egressIdentity('box-identity01')).toBeUndefined();
    store.setEgressIdentity('box-identity01', identity);
    db.close();
    // A restarted daemon reads it back.
    db = openDatabase(dir);
    const next = createBoxStore(db);
    expect(next.egressIdentity('box-identity01')).toEqual(identity);
    next.transition('box-identity01', 'deleted', { from: ['creating'] });
    expect(next.egressIdentity('box-identity01')).toBeUndefined();
    // A late attach of a deleted box does not bring the key back.
    next.setEgressIdentity('box-identity01', identity);
    expect(next.egressIdentity('box-identity01')).toBeUndefined();
    expect(JSON.stringify(db.prepare('SELECT * FROM boxes').all())).not.toContain('BEGIN CERTIFICATE');
  });
});
