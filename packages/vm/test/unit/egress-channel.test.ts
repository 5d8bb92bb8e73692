import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeBackend } from '../../src/fake/driver.js';
import type { Vm } from '../../src/backend.js';

const agentBundlePath = createRequire(import.meta.url).resolve('@agentbox/guest/agent.cjs');

/** Connects to the in-box proxy (in the fake driver it listens on the host loopback). */
function connectProxy(vm: Vm): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(vm.guest.info!.egressProxyPort, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

describe('egress channels: guest proxy ↔ host handler (fake driver)', () => {
  let vm: Vm;
  beforeAll(async () => {
    vm = await new FakeBackend({ agentBundlePath }).create({
      id: 'egress-1',
      image: {} as never,
      resources: { memoryMib: 1, vcpus: 1, diskGib: 1 },
    });
    await vm.start();
  });
  afterAll(() => vm.destroy());

  it('answers 403 egress_disabled when the box has no egress handler', async () => {
    vm.guest.setEgressHandler(undefined);
    const socket = await connectProxy(vm);
    socket.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    const reply = (await readAll(socket)).toString();
    expect(reply).toMatch(/^HTTP\/1.1 403 Forbidden\r\n/);
    expect(reply).toMatch(/X-Agentbox-Deny: egress_disabled/);
  });

  it('relays bytes both ways, unmodified, with half-close', async () => {
    const seen: { clientPort: number }[] = [];
    vm.guest.setEgressHandler((stream, meta) => {
      seen.push(meta);
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => stream.end(Buffer.concat([Buffer.from('echo:'), ...chunks])));
    });
    const socket = await connectProxy(vm);
    const clientPort = socket.localPort;
    const payload = Buffer.concat([
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      Buffer.from('\r\n\r\n'),
    ]);
    socket.end(payload);
    const reply = await readAll(socket);
    expect(reply.equals(Buffer.concat([Buffer.from('echo:'), payload]))).toBe(true);
    expect(seen[0]!.clientPort).toBe(clientPort);
  });

  it('moves 30 MiB each way with backpressure and equal hashes', async () => {
    vm.guest.setEgressHandler((stream) => stream.pipe(stream));
    const socket = await connectProxy(vm);
    const data = randomBytes(30 * 1024 * 1024);
    const back = readAll(socket);
    socket.end(data);
    const echoed = await back;
    expect(echoed.length).toBe(data.length);
    expect(createHash('sha256').update(echoed).digest('hex')).toBe(
      createHash('sha256').update(data).digest('hex'),
    );
  });

  it('carries 20 connections at once', async () => {
    vm.guest.setEgressHandler((stream) => stream.pipe(stream));
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const socket = await connectProxy(vm);
        const back = readAll(socket);
        socket.end(`conn ${i}`);
        return (await back).toString();
      }),
    );
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => `conn ${i}`));
  });

  it('a host-side abort closes the guest client', async () => {
    vm.guest.setEgressHandler((stream) => stream.once('data', () => stream.destroy()));
    const socket = await connectProxy(vm);
    socket.on('error', () => undefined);
    socket.write('y');
    await new Promise((resolve) => socket.on('close', resolve));
  });

  it('a client that goes away mid-stream releases the host side', async () => {
    const hostClosed = new Promise<void>((resolve) => {
      vm.guest.setEgressHandler((stream) => {
        stream.resume();
        stream.on('close', () => resolve());
        // keep writing: the dead client turns into an error in the guest, which resets the channel
        const timer = setInterval(() => stream.write(Buffer.alloc(64 * 1024)), 5);
        stream.on('close', () => clearInterval(timer));
      });
    });
    const socket = await connectProxy(vm);
    socket.write('x');
    await new Promise((r) => setTimeout(r, 100));
    socket.resetAndDestroy();
    await hostClosed;
  });

  it('applies configured env defaults to later execs', async () => {
    await vm.guest.configure({ AGENTBOX_TEST_VAR: 'configured' });
    let out = '';
    await vm.guest.exec(
      { argv: ['sh', '-c', 'echo "$AGENTBOX_TEST_VAR $HTTPS_PROXY"'] },
      { onStdout: (c) => void (out += c.toString()) },
    );
    expect(out).toBe('configured http://127.0.0.1:3128\n');
  });
});
