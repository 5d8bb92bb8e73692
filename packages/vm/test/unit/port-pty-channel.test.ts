import net from 'node:net';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeBackend } from '../../src/fake/driver.js';
import type { Vm } from '../../src/backend.js';

const agentBundlePath = createRequire(import.meta.url).resolve('@agentbox/guest/agent.cjs');

function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

// The real guest agent as a host process: "the guest loopback" is the host's here.
describe('port publishing and pty exec channels (fake driver)', () => {
  let vm: Vm;
  let echo: net.Server;
  let echoPort: number;
  beforeAll(async () => {
    vm = await new FakeBackend({ agentBundlePath }).create({
      id: 'port-1',
      image: {} as never,
      resources: { memoryMib: 1, vcpus: 1, diskGib: 1 },
    });
    await vm.start();
    echo = net.createServer({ allowHalfOpen: true }, (s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => s.end(Buffer.concat([Buffer.from('echo:'), ...chunks])));
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoPort = (echo.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    echo.close();
    await vm.destroy();
  });

  it('relays a published connection both ways, unmodified, with half-close', async () => {
    const stream = vm.guest.connectPort(echoPort);
    const payload = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    stream.end(payload);
    const reply = await readAll(stream);
    expect(reply.subarray(0, 5).toString()).toBe('echo:');
    expect(reply.subarray(5).equals(payload)).toBe(true);
  });

  it('fails the stream when nothing listens on the port', async () => {
    const closed = await new Promise<net.AddressInfo>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const a = s.address() as net.AddressInfo;
        s.close(() => resolve(a));
      });
    });
    const stream = vm.guest.connectPort(closed.port);
    const err = await new Promise<Error>((resolve) => stream.on('error', resolve));
    expect(err.message).toMatch(new RegExp(`nothing accepts connections on port ${closed.port}`));
  });

  it('lists loopback and wildcard listeners', async () => {
    const listeners = await vm.guest.listeners();
    expect(listeners).toContainEqual({ port: echoPort, address: '127.0.0.1' });
  });

  it('runs a command on a pty: a terminal of the asked size, resize, exit status', async () => {
    let out = '';
    let resize: ((rows: number, cols: number) => void) | undefined;
    const input = new (await import('node:stream')).PassThrough();
    const exit = vm.guest.exec(
      { argv: ['sh', '-c', 'tty; stty size; read x; stty size; exit 4'], pty: { rows: 20, cols: 70 } },
      {
        stdin: input,
        onStdout: (c) => void (out += c.toString()),
        onPty: (t) => (resize = (r, c) => t.resize(r, c)),
      },
    );
    for (let i = 0; i < 100 && !out.includes('20 70'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(out).toMatch(/^\/dev\/pts\/\d+\r\n20 70\r\n/);
    resize!(33, 99);
    await new Promise((r) => setTimeout(r, 200));
    input.write('go\r');
    expect(await exit).toMatchObject({ exitCode: 4, signal: null });
    expect(out).toMatch(/33 99\r\n$/);
  });
});
