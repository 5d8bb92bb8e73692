import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DELETE_CHUNK_ROWS } from '../../src/services/chunked-delete.js';
import { denialRecord } from '../helpers/audit-records.js';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

const DAY = 86_400_000;

describe('box retention (serve --box-retention-days)', () => {
  let h: FakeHost;
  // The host's clock: the reaper forgets what was deleted a day before it.
  let now = Date.now();
  beforeAll(async () => {
    h = await fakeHost({ boxRetentionMs: DAY, reapIntervalMs: 50, clock: () => now });
  });
  afterAll(() => h.close());

  const create = async () =>
    (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { runtime: 'bash' } })).json<{
      id: string;
    }>().id;
  const remove = async (id: string) =>
    expect((await h.admin_({ method: 'DELETE', url: `/v1/boxes/${id}` })).statusCode).toBe(200);
  const denial = (boxId: string) => denialRecord(boxId, 'denied.example', new Date(now));

  it('forgets a box deleted longer ago than the retention, with its history and audit; keeps the rest', async () => {
    const [old, recent, live] = [await create(), await create(), await create()];
    for (const id of [old, recent, live]) h.host.audit.record(denial(id));
    // More than a chunk of audit: forgotten a chunk at a time, and whole.
    for (let i = 0; i < 2 * DELETE_CHUNK_ROWS + 5; i++) h.host.audit.record(denial(old));
    await remove(old);
    now += DAY / 2;
    await remove(recent);
    now += DAY / 2 + 1;

    await vi.waitFor(() => expect(h.host.store.get(old)).toBeUndefined());
    expect(h.host.store.transitions(old)).toEqual([]);
    expect(h.host.audit.list(old)).toEqual([]);
    expect(errorCode(await h.admin_({ method: 'GET', url: `/v1/boxes/${old}` }))).toBe('box_not_found');

    // Deleted half a day ago, and live: kept, each with its audit.
    expect(h.host.store.get(recent)?.state).toBe('deleted');
    expect(h.host.store.get(live)?.state).toBe('running');
    for (const id of [recent, live]) expect(h.host.audit.list(id)).toHaveLength(1);
    const listed = await h.admin_({ method: 'GET', url: `/v1/boxes/${recent}` });
    expect(listed.json<{ state: string }>().state).toBe('deleted');
  });

  it('never forgets a box that is not deleted', () => {
    const live = h.host.store.live()[0]!;
    expect(h.host.store.forget(live.id)).toBe(false);
    expect(h.host.store.get(live.id)?.state).toBe('running');
  });
});
