import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fakeHost } from '../helpers/fake-host.js';

describe('graceful shutdown', () => {
  it('lets a running stream finish, refuses new work, and leaves the boxes recorded', async () => {
    const h = await fakeHost();
    const id = (await h.admin_({ method: 'POST', url: '/v1/boxes', payload: {} })).json<{ id: string }>().id;
    const vmPid = h.host.store.get(id)!.pid!;
    const address = await h.host.app.listen({ host: '127.0.0.1', port: 0 });
    const headers = { 'x-api-key': h.admin, 'content-type': 'application/json' };
    const streaming = fetch(`${address}/v1/boxes/${id}/exec`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ command: 'sleep 0.7; echo finished' }),
    });
    await new Promise((r) => setTimeout(r, 200));
    const closing = h.host.close(10_000);
    const late = await fetch(`${address}/v1/boxes`, { headers }).then(
      (r) => r.status,
      () => 'refused',
    );
    expect([503, 'refused']).toContain(late);
    const text = await (await streaming).text();
    expect(text).toContain(Buffer.from('finished\n').toString('base64'));
    expect(text.trim().split('\n').at(-1)).toMatch(/"type":"exit","exitCode":0/);
    await closing;
    // The box stays recorded as running for the next daemon to re-adopt.
    const { openDatabase, createBoxStore } = await import('../../src/index.js');
    const db = openDatabase(h.dataDir);
    expect(createBoxStore(db).get(id)?.state).toBe('running');
    db.close();
    // This test's fake VM is a child of the test process; end it, and remove its socket's dir:
    // only that one (other test files' fake VMs run meanwhile, in other workers).
    const argv = fs.readFileSync(`/proc/${vmPid}/cmdline`, 'utf8').split('\0');
    const socket = argv[argv.indexOf('--connect') + 1]!;
    expect(path.dirname(socket)).toMatch(new RegExp(`^${os.tmpdir()}/agentbox-fake-`));
    process.kill(vmPid, 'SIGKILL');
    fs.rmSync(h.dataDir, { recursive: true, force: true });
    fs.rmSync(path.dirname(socket), { recursive: true, force: true });
  });
});
