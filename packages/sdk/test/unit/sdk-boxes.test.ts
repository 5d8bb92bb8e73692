import fs from 'node:fs';
import { Readable } from 'node:stream';
import util from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AgentboxClient,
  BoxNotFoundError,
  CapacityExhaustedError,
  CommandNotFoundError,
  FileNotFoundError,
  InvalidRequestError,
  InvalidStateError,
  KeyNotFoundError,
  ForbiddenError,
  UnauthorizedError,
  PathOutsideWorkspaceError,
  ProcessNotFoundError,
  Sandbox,
  SnapshotFailedError,
} from '../../src/index.js';
import { sdkDaemon, type SdkDaemon } from '../helpers/sdk-daemon.js';

/** Every box method of the SDK against a real daemon (fastify on a port) over the fake driver. */
describe('Sandbox over the fake driver', () => {
  let d: SdkDaemon;
  let client: AgentboxClient;
  let box: Sandbox;

  beforeAll(async () => {
    d = await sdkDaemon();
    client = new AgentboxClient({ url: d.url, apiKey: d.admin });
    box = await Sandbox.create({ client, labels: { suite: 'sdk' }, env: { GREETING: 'hi' } });
  });
  afterAll(() => d.close());

  it('background commands: start, output so far, follow across cut connections, remove', async () => {
    const viaRelay = await Sandbox.connect(box.id, {
      client: new AgentboxClient({ url: d.proxyUrl, apiKey: d.admin }),
    });
    const go = `/tmp/agentbox-sdk-go-${process.pid}`;
    const cmd = await viaRelay.commands.start(
      `echo "$GREETING"; echo e >&2; i=0; while [ ! -e ${go} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.02; done; echo ünïcode; exit 2`,
    );
    expect(cmd).toMatchObject({ state: 'running', boxId: box.id });
    let sofar = await viaRelay.commands.output(cmd.id);
    for (let i = 0; sofar.stdout === '' && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 20));
      sofar = await viaRelay.commands.output(cmd.id);
    }
    expect(sofar).toEqual({ stdout: 'hi\n', stderr: 'e\n', stdoutOffset: 3, stderrOffset: 2, exit: null });
    const seen: string[] = [];
    const connections = d.connections();
    const following = viaRelay.commands.follow(cmd.id, {
      stdoutOffset: sofar.stdoutOffset,
      onStdout: (text) => seen.push(text),
      reconnect: { delayMs: 20 },
    });
    // Connections cut while it follows: it reads on from the bytes it had.
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 150));
      d.cutConnections();
    }
    fs.writeFileSync(go, '');
    const result = await following;
    fs.rmSync(go);
    expect(result).toMatchObject({ exitCode: 2, stdout: 'ünïcode\n', stderr: 'e\n' });
    expect(seen.join('')).toBe('ünïcode\n');
    expect(d.connections() - connections).toBeGreaterThanOrEqual(3);
    expect(await box.commands.get(cmd.id)).toMatchObject({ state: 'exited', exitCode: 2 });
    expect((await box.commands.list()).map((c) => c.id)).toContain(cmd.id);
    await box.commands.remove(cmd.id);
    await expect(box.commands.get(cmd.id)).rejects.toBeInstanceOf(CommandNotFoundError);
  });

  it('background commands with their stdin open: sendStdin, closeStdin, then refused', async () => {
    const cmd = await box.commands.start('cat; echo done', { stdinOpen: true });
    await box.commands.sendStdin(cmd.id, 'ünï\n');
    await box.commands.sendStdin(cmd.id, new Uint8Array([0x6f, 0x6b, 0x0a]));
    await box.commands.closeStdin(cmd.id);
    const result = await box.commands.follow(cmd.id);
    expect(result).toMatchObject({ exitCode: 0, stdout: 'ünï\nok\ndone\n' });
    await expect(box.commands.sendStdin(cmd.id, 'late')).rejects.toBeInstanceOf(InvalidStateError);
    await box.commands.remove(cmd.id);

    // One that does not read yet: sendStdin waits for it (past the 1 MiB the box holds unread),
    // or gives up after waitMs.
    const go = `/tmp/agentbox-sdk-stdin-go-${process.pid}`;
    const slow = await box.commands.start(
      `i=0; while [ ! -e ${go} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.02; done; wc -c`,
      { stdinOpen: true },
    );
    const big = new Uint8Array(3 * 1024 * 1024).fill(120);
    await expect(box.commands.sendStdin(slow.id, big, { waitMs: 300 })).rejects.toBeInstanceOf(
      CapacityExhaustedError,
    );
    let sent = false;
    const sending = box.commands.sendStdin(slow.id, big).then(() => (sent = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(sent).toBe(false);
    fs.writeFileSync(go, '');
    await sending;
    await box.commands.closeStdin(slow.id);
    fs.rmSync(go);
    // What the first call got in before it gave up, and all of the second.
    const counted = Number((await box.commands.follow(slow.id)).stdout.trim());
    expect(counted).toBeGreaterThanOrEqual(big.length + 1024 * 1024);
    expect(counted).toBeLessThan(2 * big.length);
    await box.commands.remove(slow.id);
  });

  it('creates a running box; connect and list find it', async () => {
    expect(box.id).toMatch(/^box-[a-z0-9]{10}$/);
    expect(box.state).toBe('running');
    expect(box.info.labels).toEqual({ suite: 'sdk' });
    const again = await Sandbox.connect(box.id, { client });
    expect(again.info).toMatchObject({ id: box.id, state: 'running' });
    expect((await Sandbox.list({ client })).map((b) => b.id)).toContain(box.id);
    expect(await client.boxes.get(box.id)).toMatchObject({ id: box.id });
    expect((await box.refresh()).id).toBe(box.id);
  });

  it('printing a client, a box or its parts does not show the API key', async () => {
    const printed = [
      util.inspect(box, { depth: 10 }),
      util.inspect(box, { depth: 10, showHidden: true }),
      util.inspect(client, { depth: 10 }),
      // A box and a client are circular (client.boxes.client); their parts are not.
      JSON.stringify(box.commands),
      JSON.stringify(box.files),
      JSON.stringify(box.processes),
      JSON.stringify(client.tasks),
      JSON.stringify(client.library),
    ];
    for (const text of printed) {
      expect(text).not.toContain(d.admin);
      expect(text).not.toMatch(/apiKey/);
    }
    expect(printed[0]).toContain(d.url);
    // The key is still sent.
    expect((await box.refresh()).id).toBe(box.id);
  });

  it('a create aborted while the daemon boots leaves no box: the daemon deletes it', async () => {
    const labels = { job: 'aborted-create' };
    const controller = new AbortController();
    const creating = Sandbox.create({ client, labels, signal: controller.signal });
    const mine = async () => (await client.boxes.list()).filter((b) => b.labels.job === labels.job);
    await expect.poll(async () => (await mine()).length, { interval: 5, timeout: 5000 }).toBe(1);
    controller.abort();
    await expect(creating).rejects.toMatchObject({ name: 'AbortError' });
    await expect.poll(async () => (await mine()).map((b) => b.state), { timeout: 10_000 }).toEqual([]);
  });

  it('takes url and key from AGENTBOX_URL / AGENTBOX_API_KEY by default', async () => {
    const fromEnv = new AgentboxClient({}, { AGENTBOX_URL: `${d.url}/`, AGENTBOX_API_KEY: d.admin });
    expect(fromEnv.url).toBe(d.url);
    expect((await fromEnv.boxes.connect(box.id)).id).toBe(box.id);
    expect(new AgentboxClient({}, {}).url).toBe('http://127.0.0.1:8080');
    expect(await fromEnv.health()).toMatchObject({ status: 'ok' });
  });

  it('runs a shell command, streaming stdout and stderr to the callbacks as they come', async () => {
    const out: string[] = [];
    const err: string[] = [];
    let pid = 0;
    const result = await box.commands.run('echo $GREETING; echo warn >&2; sleep 0.2; echo later; exit 3', {
      onStdout: (s) => out.push(s),
      onStderr: (s) => err.push(s),
      onStart: (p) => (pid = p),
    });
    expect(result).toMatchObject({
      exitCode: 3,
      signal: null,
      timedOut: false,
      stdout: 'hi\nlater\n',
      stderr: 'warn\n',
    });
    expect(out.join('')).toBe('hi\nlater\n');
    // Output came in pieces as it happened, not in one lump at the end.
    expect(out.length).toBeGreaterThanOrEqual(2);
    expect(err.join('')).toBe('warn\n');
    expect(pid).toBeGreaterThan(0);
    expect(result.pid).toBe(pid);
    expect(result.durationMs).toBeGreaterThanOrEqual(200);
  });

  it('hands binary output over as bytes, unkept, when asked for bytes', async () => {
    const chunks: Uint8Array[] = [];
    const result = await box.commands.run(['sh', '-c', "printf '\\000\\377\\200ok'; echo text >&2"], {
      onStdoutBytes: async (b) => {
        chunks.push(b);
        await new Promise((r) => setTimeout(r, 1));
      },
    });
    expect(Buffer.concat(chunks)).toEqual(Buffer.from([0, 0xff, 0x80, 0x6f, 0x6b]));
    expect(result).toMatchObject({ exitCode: 0, stdout: '', stderr: 'text\n' });
  });

  it('runs argv without a shell, with env, cwd and stdin; multi-byte UTF-8 split anywhere survives', async () => {
    const r = await box.commands.run(['sh', '-c', 'pwd; echo "$X"; cat'], {
      env: { X: 'ex' },
      cwd: '/tmp',
      stdin: 'héllo wörld ✓\n',
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('/tmp\nex\nhéllo wörld ✓\n');
    const literal = await box.commands.run(['echo', '$HOME;', '*']);
    expect(literal.stdout).toBe('$HOME; *\n');
  });

  it('kills a command past its timeoutMs and says so', async () => {
    const r = await box.commands.run('sleep 30', { timeoutMs: 300 });
    expect(r).toMatchObject({ timedOut: true, exitCode: null, signal: 'SIGKILL' });
  });

  it('files: write text, bytes and a stream; read back, list, exists, remove', async () => {
    expect(await box.files.write('notes/a.txt', 'alpha\n')).toEqual({
      path: expect.stringMatching(/notes\/a\.txt$/),
      bytes: 6,
    });
    const bytes = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 13) % 256));
    await box.files.write('notes/b.bin', bytes);
    await box.files.write(
      'notes/c.txt',
      Readable.from([Buffer.from('one '), Buffer.from('two')]) as AsyncIterable<Uint8Array>,
    );
    // A browser's File is a Blob: sent as it is, no stream needed.
    expect(await box.files.write('notes/d.bin', new Blob([bytes.subarray(0, 1000), 'tail']))).toMatchObject({
      bytes: 1004,
    });
    expect(await box.files.readText('notes/a.txt')).toBe('alpha\n');
    expect((await box.files.read('notes/b.bin')).equals(bytes)).toBe(true);
    expect(
      (await box.files.read('notes/d.bin')).equals(
        Buffer.concat([bytes.subarray(0, 1000), Buffer.from('tail')]),
      ),
    ).toBe(true);
    expect(await box.files.readText('notes/c.txt')).toBe('one two');
    const chunks: Uint8Array[] = [];
    for await (const chunk of (await box.files.readStream(
      'notes/b.bin',
    )) as unknown as AsyncIterable<Uint8Array>)
      chunks.push(chunk);
    expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
    const entries = await box.files.list('notes');
    expect(entries.map((e) => [e.name, e.type, e.size]).sort()).toEqual([
      ['a.txt', 'file', 6],
      ['b.bin', 'file', 200_000],
      ['c.txt', 'file', 7],
      ['d.bin', 'file', 1004],
    ]);
    // The command sees what the files API wrote.
    expect((await box.commands.run('cat notes/a.txt')).stdout).toBe('alpha\n');
    // A name JSON cannot carry is left out of the entries, and counted.
    await box.commands.run(`touch "notes/$(printf 'bad\\377')"`);
    const listing = await box.files.listing('notes');
    expect([listing.entries.length, listing.omitted]).toEqual([4, 1]);
    await expect(box.files.read('notes')).rejects.toThrow(/is a directory/);
    await expect(box.files.list('notes/a.txt')).rejects.toThrow(/not a directory/);
    expect(await box.files.exists('notes/a.txt')).toBe(true);
    await box.files.remove('notes');
    expect(await box.files.exists('notes/a.txt')).toBe(false);
    const missing = await box.files.read('notes/a.txt').catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(FileNotFoundError);
    const escape = await box.files.read('../../etc/passwd').catch((e: unknown) => e);
    expect(escape).toBeInstanceOf(PathOutsideWorkspaceError);
    expect(escape).toMatchObject({ code: 'path_outside_workspace', status: 400 });
  });

  it('processes: lists a running command and kills it', async () => {
    let started!: (pid: number) => void;
    const pidOf = new Promise<number>((resolve) => (started = resolve));
    const running = box.commands.run(['sleep', '30'], { onStart: (pid) => started(pid) });
    const pid = await pidOf;
    const list = await box.processes.list();
    expect(list.find((p) => p.pid === pid)).toMatchObject({ command: expect.stringContaining('sleep') });
    await box.processes.kill(pid, 'SIGTERM');
    expect(await running).toMatchObject({ exitCode: null, signal: 'SIGTERM' });
    const gone = await box.processes.kill(pid).catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(ProcessNotFoundError);
  });

  it('pause and resume; hibernate is refused by a backend without snapshots', async () => {
    expect(await box.pause()).toMatchObject({ state: 'paused' });
    expect(box.state).toBe('paused');
    expect(await box.resume()).toMatchObject({ state: 'running' });
    // The same by id, without a Sandbox.
    expect(await client.boxes.pause(box.id)).toMatchObject({ id: box.id, state: 'paused' });
    expect(await client.boxes.resume(box.id)).toMatchObject({ id: box.id, state: 'running' });
    const refused = await box.hibernate().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(SnapshotFailedError);
    expect((await box.refresh()).state).toBe('running');
  });

  it('an invalid field is InvalidRequestError naming it', async () => {
    const err = await Sandbox.create({ client, memoryMib: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect(err).toMatchObject({ code: 'invalid_request', field: 'memoryMib', status: 400 });
    expect((err as InvalidRequestError).requestId).toMatch(/^req_/);
  });

  it('kill deletes the box; using it afterwards is InvalidStateError; an unknown id BoxNotFoundError', async () => {
    const doomed = await client.boxes.create();
    expect(await doomed.kill()).toMatchObject({ id: doomed.id, state: 'deleted' });
    const err = await doomed.commands.run('true').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidStateError);
    expect((await Sandbox.list({ client })).map((b) => b.id)).not.toContain(doomed.id);
    const unknown = await Sandbox.connect('box-0000000000', { client }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(BoxNotFoundError);
    expect(unknown).toMatchObject({ code: 'box_not_found', status: 404, name: 'BoxNotFoundError' });
  });
});

describe('client.keys over a real daemon', () => {
  let d: SdkDaemon;
  beforeAll(async () => {
    d = await sdkDaemon();
  });
  afterAll(() => d.close());

  it('makes, lists, grants and revokes keys with an admin key; a user key is refused', async () => {
    const admin = new AgentboxClient({ url: d.url, apiKey: d.admin });
    const made = await admin.keys.create({ name: 'tenant', grants: { repos: ['acme/*'] } });
    expect(made).toMatchObject({ scope: 'user', grants: { repos: ['acme/*'], maxBoxes: null } });
    const tenant = new AgentboxClient({ url: d.url, apiKey: made.key });
    await expect(tenant.keys.list()).rejects.toBeInstanceOf(ForbiddenError);
    expect((await admin.keys.list()).map((k) => k.id)).toContain(made.id);
    expect((await admin.keys.updateGrants(made.id, { maxBoxes: 1 })).grants).toEqual({
      repos: ['acme/*'],
      maxBoxes: 1,
      maxTasks: null,
      maxMemoryMib: null,
      maxDiskGib: null,
      maxSpendUsd: null,
    });
    expect(await admin.keys.resetSpend(made.id)).toMatchObject({ id: made.id, spentUsd: 0 });
    expect((await admin.keys.revoke(made.id)).revokedAt).not.toBeNull();
    await expect(tenant.boxes.list()).rejects.toBeInstanceOf(UnauthorizedError);
    await expect(admin.keys.revoke('key_000000000000')).rejects.toBeInstanceOf(KeyNotFoundError);
  });
});
