import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Vm } from '../../src/backend.js';
import { NPM_VERSION } from '../../src/image/recipe.js';
import { bootBox, destroyAll, leftovers, run } from '../../../../test/helpers.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('one real VM: exec, files, processes through the guest agent', () => {
  let vm: Vm;
  beforeAll(async () => {
    vm = await bootBox();
  });
  afterAll(async () => {
    const id = vm.id;
    await destroyAll();
    expect(leftovers(id)).toEqual({ processes: [], files: false });
  });

  it('boots a Linux guest whose agent speaks our versions', async () => {
    expect(vm.state).toBe('running');
    expect(vm.guest.info).toMatchObject({ protocolVersion: 1, imageApiVersion: 1 });
    const r = await run(
      vm,
      'uname -s; cat /proc/sys/kernel/random/boot_id; id -u; df -B1 --output=size / | tail -1',
    );
    const [kernel, bootId, uid, rootBytes] = r.stdout.toString().trim().split('\n');
    expect(kernel).toBe('Linux');
    expect(bootId).toBe(vm.guest.info!.bootId);
    expect(uid).toBe('0');
    // The first command already has the whole 2 GiB disk, not the image's 1.2 GiB filesystem.
    expect(Number(rootBytes)).toBeGreaterThan(1.6 * 1024 ** 3);
  });

  it('resolves localhost and its own hostname, with no NIC and no DNS, and serves on loopback', async () => {
    const script = [
      'getent hosts localhost >/dev/null && echo localhost',
      'getent hosts "$(hostname)" >/dev/null && echo own-name',
      // Python's getfqdn() (and Java's canonical name) read the name back from its address.
      `[ "$(python3 -c 'import socket; print(socket.getfqdn())')" = "$(hostname)" ] && echo fqdn`,
      'python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 & i=0',
      'until curl -sf -o /dev/null http://localhost:8123/; do i=$((i + 1)); [ $i -gt 300 ] && break; sleep 0.1; done',
      '[ $i -le 300 ] && echo served; kill $!',
    ].join('\n');
    expect((await run(vm, script)).stdout.toString()).toBe('localhost\nown-name\nfqdn\nserved\n');
  });

  it('commits with git out of the box, under a fallback identity a task can override', async () => {
    const script = [
      'cd "$(mktemp -d)" && git init -q && echo x > f && git add f && git commit -qm one',
      'GIT_AUTHOR_NAME=dora GIT_AUTHOR_EMAIL=dora@example.test git commit -q --allow-empty -m two',
      'git log --format="%an <%ae>"',
    ].join(' && ');
    expect((await run(vm, script)).stdout.toString()).toBe(
      'dora <dora@example.test>\nagentbox <agentbox@agentbox.invalid>\n',
    );
  });

  it('has npm and npx, which install a package, and node says nothing unasked on stderr', async () => {
    const script = [
      'npx --version',
      'cd "$(mktemp -d)" && mkdir dep app',
      `echo '{"name":"dep","version":"1.0.0","main":"index.js"}' > dep/package.json`,
      `echo 'module.exports = () => 42' > dep/index.js`,
      `echo '{"name":"app","version":"1.0.0"}' > app/package.json`,
      'cd app && npm install --no-audit --no-fund --silent ../dep',
      `node -e 'console.log(require("dep")())'`,
    ].join(' && ');
    const r = await run(vm, script);
    expect(r.stdout.toString()).toBe(`${NPM_VERSION}\n42\n`);
    expect(r.stderr).toBe('');
  });

  it('passes exit codes and signals', async () => {
    expect((await run(vm, 'exit 3')).exit).toMatchObject({ exitCode: 3, signal: null });
    expect((await run(vm, 'kill -KILL $$')).exit).toMatchObject({ exitCode: null, signal: 'SIGKILL' });
    expect((await run(vm, 'kill -TERM $$')).exit).toMatchObject({ exitCode: null, signal: 'SIGTERM' });
  });

  it('keeps stdout and stderr apart', async () => {
    const r = await run(vm, 'echo out; echo err >&2; echo out2');
    expect(r.stdout.toString()).toBe('out\nout2\n');
    expect(r.stderr).toBe('err\n');
  });

  it('passes env and cwd', async () => {
    const stdout: Buffer[] = [];
    const exit = await vm.guest.exec(
      { argv: ['sh', '-c', 'echo "$GREETING|$(pwd)|$HOME"'], env: { GREETING: 'hi there' }, cwd: '/tmp' },
      { onStdout: (c) => void stdout.push(c) },
    );
    expect(exit.exitCode).toBe(0);
    expect(Buffer.concat(stdout).toString()).toBe('hi there|/tmp|/root\n');
  });

  it('streams 50 MB of stdout without loss (sha256 compared)', async () => {
    const prepared = await run(vm, 'head -c 52428800 /dev/urandom > /tmp/big && sha256sum /tmp/big');
    const expected = prepared.stdout.toString().split(' ')[0];
    const r = await run(vm, 'cat /tmp/big');
    expect(r.stdout.length).toBe(52428800);
    expect(sha256(r.stdout)).toBe(expected);
    await vm.guest.remove('/tmp/big');
  });

  it('feeds binary stdin losslessly', async () => {
    const input = Buffer.concat([
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      randomBytes(4 * 1024 * 1024),
    ]);
    const r = await run(vm, 'sha256sum | cut -d" " -f1', { stdin: input });
    expect(r.stdout.toString().trim()).toBe(sha256(input));
  });

  it('runs 20 execs at once in one box', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => run(vm, `sleep 0.$((${i} % 4)); echo ${i}; echo e${i} >&2`)),
    );
    expect(results.map((r) => r.stdout.toString())).toEqual(Array.from({ length: 20 }, (_, i) => `${i}\n`));
    expect(results.map((r) => r.stderr)).toEqual(Array.from({ length: 20 }, (_, i) => `e${i}\n`));
  });

  it('writes a 20 MB file and reads it back with equal sha256', async () => {
    const data = randomBytes(20 * 1024 * 1024);
    await vm.guest.writeFile('/root/data.bin', data);
    const inGuest = await run(vm, 'sha256sum /root/data.bin | cut -d" " -f1');
    expect(inGuest.stdout.toString().trim()).toBe(sha256(data));
    expect(sha256(await vm.guest.readFileBuffer('/root/data.bin'))).toBe(sha256(data));
    expect((await vm.guest.stat('/root/data.bin')).size).toBe(data.length);
    await vm.guest.remove('/root/data.bin');
  });

  it("carries a service's bulk bytes out through a published port intact, download after download", async () => {
    // The agent relays a connection's bytes as JavaScript writes to the channel: when the port was
    // full they waited in libuv, and a GC once freed them meanwhile (every run broke within 40).
    const size = 6 * 1024 * 1024;
    const served = await run(
      vm,
      [
        `head -c ${size} /dev/urandom > /root/served.bin && sha256sum /root/served.bin | cut -d" " -f1`,
        'cd /root && (python3 -m http.server 8125 --bind 127.0.0.1 >/dev/null 2>&1 &)',
        'i=0; until curl -sf -o /dev/null http://127.0.0.1:8125/served.bin; do i=$((i+1)); [ $i -gt 300 ] && break; sleep 0.1; done',
      ].join('\n'),
    );
    const want = served.stdout.toString().trim();
    for (let round = 0; round < 40; round++) {
      const connection = vm.guest.connectPort(8125);
      const chunks: Buffer[] = [];
      connection.on('data', (c: Buffer) => chunks.push(c));
      const ended = new Promise<void>((resolve, reject) => {
        connection.on('end', resolve);
        connection.on('error', reject);
      });
      connection.end('GET /served.bin HTTP/1.0\r\n\r\n');
      await ended;
      const response = Buffer.concat(chunks);
      const body = response.subarray(response.indexOf('\r\n\r\n') + 4);
      expect(body.length, `download ${round}`).toBe(size);
      expect(sha256(body), `download ${round}`).toBe(want);
      // The box is used meanwhile too: the agent's heap churns, and garbage is collected.
      expect((await run(vm, 'echo ok')).stdout.toString()).toBe('ok\n');
    }
    await run(vm, 'pkill -f "http.server 8125"; rm /root/served.bin');
  });

  it('kills the process and its children when an exec times out', async () => {
    const started = Date.now();
    const r = await run(vm, 'sleep 300 & sleep 300', { timeoutMs: 1000 });
    expect(r.exit.timedOut).toBe(true);
    expect(Date.now() - started).toBeLessThan(60_000);
    const left = (await vm.guest.listProcesses()).filter((p) => p.command === 'sleep 300');
    expect(left).toEqual([]);
  });

  it('lists and kills processes, and reports health', async () => {
    const running = run(vm, 'exec sleep 123');
    await new Promise((r) => setTimeout(r, 1500));
    const sleeper = (await vm.guest.listProcesses()).find((p) => p.command === 'sleep 123');
    expect(sleeper).toMatchObject({ user: 'root' });
    await vm.guest.killProcess(sleeper!.pid, 'SIGTERM');
    expect((await running).exit.signal).toBe('SIGTERM');
    const health = await vm.guest.health();
    expect(health.memTotalBytes).toBeGreaterThan(256 * 1024 * 1024);
    expect(health.diskTotalBytes).toBeGreaterThan(0);
  });
});
