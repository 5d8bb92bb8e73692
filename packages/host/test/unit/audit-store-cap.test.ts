import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createAuditStore, openDatabase } from '../../src/index.js';
import { denialRecord } from '../helpers/audit-records.js';

describe('the egress audit keeps the newest records of each box', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-audit-cap-'));
  const db = openDatabase(dir);
  afterAll(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const denial = (boxId: string, n: number) => denialRecord(boxId, `h${n}.example`);

  it('a box that retries without end grows the store by its cap at most; other boxes keep theirs', () => {
    const audit = createAuditStore(db, { maxPerBox: 5 });
    for (let n = 1; n <= 3; n++) audit.record(denial('quiet', n));
    for (let n = 1; n <= 12; n++) audit.record(denial('loop', n));
    // Pruned every 5 of its records: after the 10th down to 6–10, then 11 and 12 came.
    expect(audit.list('loop').map((r) => r.record.host)).toEqual(
      [6, 7, 8, 9, 10, 11, 12].map((n) => `h${n}.example`),
    );
    expect(audit.list('quiet').map((r) => r.record.host)).toEqual(['h1.example', 'h2.example', 'h3.example']);
    for (let n = 13; n <= 15; n++) audit.record(denial('loop', n));
    expect(audit.list('loop').map((r) => r.record.host)).toEqual(
      [11, 12, 13, 14, 15].map((n) => `h${n}.example`),
    );
  });
});
