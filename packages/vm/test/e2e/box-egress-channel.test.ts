import { createHash } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Vm } from '../../src/backend.js';
import { bootBox, destroyAll, run } from '../../../../test/helpers.js';

// The plumbing under the egress gateway, in a real VM: the guest has no NIC, its proxy relays
// every client connection to the host, and only the host decides what happens to it.
describe('real VM: no NIC, every connection goes through the in-box proxy to the host', () => {
  let vm: Vm;
  beforeAll(async () => {
    vm = await bootBox();
  });
  afterAll(destroyAll);

  it('has no network interface but loopback', async () => {
    const r = await run(vm, 'ls /sys/class/net');
    expect(r.stdout.toString().trim()).toBe('lo');
  });

  it('cannot open a TCP connection without the proxy', async () => {
    const r = await run(vm, 'curl -sS --noproxy "*" --max-time 5 http://1.1.1.1/; echo "exit=$?"');
    expect(r.stdout.toString()).toMatch(/exit=7/);
    const py = await run(
      vm,
      `python3 -c 'import socket\ntry:\n  socket.create_connection(("10.0.0.1", 80), timeout=3)\n  print("connected")\nexcept OSError as e:\n  print("refused", e.errno)'`,
    );
    expect(py.stdout.toString()).toMatch(/^refused/);
  });

  it('points every client at the proxy: exec env, login shells, git, npm, pip', async () => {
    const r = await run(
      vm,
      'echo "$HTTPS_PROXY|$NO_PROXY"; bash -lc \'echo "$https_proxy"\'; git config --system http.proxy; cat /usr/local/etc/npmrc /etc/pip.conf',
    );
    expect(r.stdout.toString()).toBe(
      'http://127.0.0.1:3128|localhost,127.0.0.1,::1\nhttp://127.0.0.1:3128\nhttp://127.0.0.1:3128\n' +
        'proxy=http://127.0.0.1:3128\nhttps-proxy=http://127.0.0.1:3128\n' +
        // pip may install into the system Python: a box is the environment agents are meant to change
        '[global]\nproxy = http://127.0.0.1:3128\nbreak-system-packages = true\n',
    );
  });

  it('without a gateway, answers 403 egress_disabled for HTTP and CONNECT', async () => {
    vm.guest.setEgressHandler(undefined);
    const plain = await run(vm, 'curl -s -D - -o /dev/null http://example.com/');
    expect(plain.stdout.toString()).toMatch(/^HTTP\/1.1 403/);
    expect(plain.stdout.toString()).toMatch(/X-Agentbox-Deny: egress_disabled/i);
    const tls = await run(
      vm,
      'curl -s -o /dev/null -w "%{http_connect}" https://example.com/; echo " exit=$?"',
    );
    expect(tls.stdout.toString().trim()).toBe('403 exit=56');
  });

  it('hands each connection to the host handler as a stream that speaks HTTP', async () => {
    const server = http.createServer((req, res) => {
      res.end(`hello via gateway ${req.method} ${req.url} ${req.headers['user-agent']?.split('/')[0]}`);
    });
    vm.guest.setEgressHandler((stream) => server.emit('connection', stream));
    const r = await run(vm, 'curl -s http://example.test/some/path?q=1; echo; curl -s http://other.test/');
    expect(r.stdout.toString()).toBe(
      'hello via gateway GET http://example.test/some/path?q=1 curl\nhello via gateway GET http://other.test/ curl',
    );
  });

  it('moves bulk both ways through it intact: uploads and downloads, two at a time, again and again', async () => {
    // The guest's side relays a connection's bytes as JavaScript writes to the channel (queued
    // while the port is full): the path a GC once corrupted for published ports.
    const size = 6 * 1024 * 1024;
    const served = Buffer.alloc(size);
    for (let i = 0; i < size; i++) served[i] = (i * 31 + (i >> 12)) % 256;
    const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const server = http.createServer((req, res) => {
      if (req.method === 'GET') return res.end(served);
      const hash = createHash('sha256');
      req.on('data', (c: Buffer) => hash.update(c));
      req.on('end', () => res.end(hash.digest('hex')));
    });
    vm.guest.setEgressHandler((stream) => server.emit('connection', stream));
    const r = await run(
      vm,
      [
        `head -c ${size} /dev/urandom > /root/up.bin`,
        'sha256sum /root/up.bin | cut -d" " -f1',
        'for i in 1 2 3 4 5 6 7 8; do',
        '  curl -s --data-binary @/root/up.bin -o /root/up.out http://sink.test/ & up=$!',
        '  curl -s http://source.test/ | sha256sum | cut -d" " -f1',
        '  wait $up; cat /root/up.out; echo',
        'done',
      ].join('\n'),
      { timeoutMs: 300_000 },
    );
    const [sent, ...lines] = r.stdout.toString().trim().split('\n');
    // Each round: the download's hash, then the upload's as the host computed it.
    expect(lines).toEqual(Array.from({ length: 8 }, () => [sha256(served), sent]).flat());
  });
});
