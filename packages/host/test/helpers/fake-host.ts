import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { FakeBackend } from '@agentbox/vm/fake';
import { processStartTime } from '@agentbox/vm';
import { createHost, type Host, type HostOptions } from '../../src/index.js';

export const agentBundlePath = createRequire(import.meta.url).resolve('@agentbox/guest/agent.cjs');

export interface FakeHost {
  host: Host;
  dataDir: string;
  admin: string;
  /** An HTTP request through the real fastify stack (no socket). */
  call(options: InjectOptions): Promise<LightMyRequestResponse>;
  /** Same, with the admin key. */
  admin_(options: InjectOptions): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

/**
 * A daemon over the fake driver: the real guest agent as a host process per box, each with its own
 * workspace under the data dir. Every JSON response is checked against its route's schema.
 */
export async function fakeHost(options: Partial<HostOptions> = {}): Promise<FakeHost> {
  // The fake driver's "guest" is this host: a box's egress attach would append its CA to this
  // machine's trust bundle (/etc/ssl/certs). Tests of egress use a recording BoxEgress instead.
  if (options.egress) throw new Error('fakeHost takes no egress: its guest is this host');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-host-'));
  const host = createHost({
    dataDir,
    backend: new FakeBackend({ agentBundlePath }),
    image: {} as never,
    boxDir: (id) => path.join(dataDir, 'boxes', id),
    probe: { startTime: processStartTime, killMentioning: async () => undefined },
    guestLayout: (id) => ({
      workspace: path.join(dataDir, 'guest', id, 'workspace'),
      envFile: path.join(dataDir, 'guest', id, 'env.json'),
    }),
    validateResponses: true,
    ...options,
  });
  await host.start();
  const admin = host.keys.create({ name: 'test admin', scope: 'admin' }).secret;
  const call = (o: InjectOptions) => host.app.inject(o);
  return {
    host,
    dataDir,
    admin,
    call,
    admin_: (o) => call({ ...o, headers: { 'x-api-key': admin, ...o.headers } }),
    async close() {
      for (const box of host.store.live()) {
        await host.boxes.remove({ actor: { keyId: 'x', scope: 'admin' }, id: box.id }).catch(() => undefined);
      }
      await host.close(100);
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * The fake driver with a resource check that takes `ms`: a create awaits it after its user lookup
 * and before its box is recorded, which is where races between calls and client timeouts fall.
 */
export function slowCreateBackend(ms: number): FakeBackend {
  return Object.assign(new FakeBackend({ agentBundlePath }), {
    checkResources: () => new Promise<void>((r) => setTimeout(r, ms)),
  });
}

/** The error body's code, asserting the uniform error shape on the way. */
export function errorCode(response: LightMyRequestResponse): string {
  const body = response.json<{ error: { code: string; message: string; requestId: string } }>();
  if (!body.error || typeof body.error.requestId !== 'string' || !body.error.requestId.startsWith('req_'))
    throw new Error(`not an error body: ${response.body}`);
  if (/\n\s+at /.test(response.body)) throw new Error(`stack trace leaked: ${response.body}`);
  return body.error.code;
}

/** Whether no process has this pid any more (on this host: the fake driver runs commands here). */
export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}
