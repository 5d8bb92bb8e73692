import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { fakeHost } from '../helpers/fake-host.js';

/**
 * A streamed exec whose client goes away while its guest says nothing (as a VM QEMU stopped on a
 * full disk): nothing is left to answer, and the daemon must not try to.
 */
describe('a streamed exec whose client went away', () => {
  it('ends quietly: nothing is logged as failed', async () => {
    const lines: { level: number; msg?: string; err?: { message?: string } }[] = [];
    const logger = pino(
      { level: 'info' },
      { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) },
    );
    const h = await fakeHost({ logger });
    try {
      const created = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} });
      const { id, pid } = created.json<{ id: string; pid: number }>();
      const address = await h.host.app.listen({ host: '127.0.0.1', port: 0 });
      const client = new AbortController();
      const response = await fetch(`${address}/v1/boxes/${id}/exec`, {
        method: 'POST',
        headers: { 'x-api-key': h.admin, 'content-type': 'application/json' },
        body: JSON.stringify({ command: 'sleep 1; echo late' }),
        signal: client.signal,
      });
      const reader = response.body!.getReader();
      expect(new TextDecoder().decode((await reader.read()).value as Uint8Array)).toContain('"started"');
      process.kill(pid, 'SIGSTOP');
      client.abort();
      await new Promise((r) => setTimeout(r, 300));
      process.kill(pid, 'SIGCONT');
      // The exec's request ends (the create's was the first to): then whatever follows it is logged.
      const ended = () =>
        lines.filter((l) => /request completed|stream closed prematurely/.test(l.msg ?? ''));
      await expect.poll(() => ended().length, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
      await new Promise((r) => setTimeout(r, 1_500));
      expect(lines.filter((l) => l.level >= 50).map((l) => l.err?.message ?? l.msg)).toEqual([]);
    } finally {
      await h.close();
    }
  });
});
