import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema, type TaskCursor } from '@agentbox/protocol';
import { createTaskStore, openDatabase } from '../../src/index.js';
import { LIST_PAGE_BYTES } from '../../src/store/task-store.js';
import { standInTaskService } from '../helpers/task-service-standins.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-task-pages-'));
const db = openDatabase(dir);
afterAll(() => {
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * A task's files ride in its spec (up to the body limit each): a page of the task list ends after
 * about LIST_PAGE_BYTES of specs, so listing big tasks never reads them all into one answer.
 */
describe('a page of tasks', () => {
  it('ends early on big specs; following the cursor still walks every task once, in order', () => {
    let now = 1_000;
    const store = createTaskStore(db, () => now++);
    const big = 'x'.repeat(Math.floor(LIST_PAGE_BYTES / 3));
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const id = `task-${String(i).padStart(2, '0')}`;
      const files = i % 2 === 0 ? { 'big.txt': big } : undefined;
      const spec = TaskSpecSchema.parse({ agent: 'shell', prompt: `p${i}`, ...(files ? { files } : {}) });
      store.insert({
        id,
        ownerKeyId: 'k',
        target: 'ephemeral',
        boxId: null,
        userId: null,
        agent: 'shell',
        spec,
      });
      ids.unshift(id);
    }
    const seen: string[] = [];
    const sizes: number[] = [];
    let after: TaskCursor | undefined;
    for (;;) {
      const page = store.list({ ownerKeyId: 'k', limit: 100, ...(after ? { after } : {}) });
      sizes.push(page.tasks.length);
      seen.push(...page.tasks.map((t) => t.id));
      const bytes = page.tasks.reduce((n, t) => n + JSON.stringify(t.spec).length, 0);
      // One task may pass the bound alone; two or more stay under it.
      if (page.tasks.length > 1) expect(bytes).toBeLessThanOrEqual(LIST_PAGE_BYTES);
      if (page.next === null) break;
      after = page.next;
    }
    expect(seen).toEqual(ids);
    expect(sizes.length).toBeGreaterThan(1);
    // Small tasks still come a hundred to a page.
    expect(store.list({ ownerKeyId: 'nobody', limit: 100 })).toEqual({ tasks: [], next: null });
  });
});

describe('the task queue', () => {
  it('holds at most so many bytes of specs in memory: 429 past it, room again once tasks start', async () => {
    const queueDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-task-queue-'));
    const service = standInTaskService(queueDir, { maxConcurrent: 0, maxQueuedSpecBytes: 3 * 1024 * 1024 });
    try {
      const actor = { keyId: 'k', scope: 'user' as const };
      const spec = TaskSpecSchema.parse({
        agent: 'claude',
        prompt: 'go',
        files: { 'a.bin': 'a'.repeat(1024 * 1024) },
      });
      const queued = [0, 1].map(() => service.tasks.submit({ actor, spec, userId: 'alice' }));
      expect(queued.map((t) => t.state)).toEqual(['queued', 'queued']);
      let refused: unknown;
      try {
        service.tasks.submit({ actor, spec, userId: 'alice' });
      } catch (err) {
        refused = err;
      }
      expect(refused).toMatchObject({
        code: 'capacity_exhausted',
        message: expect.stringMatching(/task queue/),
      });
      // A small task still fits beside them.
      service.tasks.submit({
        actor,
        spec: TaskSpecSchema.parse({ agent: 'claude', prompt: 'small' }),
        userId: 'alice',
      });
      service.tasks.setMaxConcurrent(5);
      await vi.waitFor(() => expect(service.store.get(queued[1]!.id)!.state).toBe('succeeded'));
      const again = service.tasks.submit({ actor, spec, userId: 'alice' });
      await vi.waitFor(() => expect(service.store.get(again.id)!.state).toBe('succeeded'));
    } finally {
      service.db.close();
      fs.rmSync(queueDir, { recursive: true, force: true });
    }
  });
});
