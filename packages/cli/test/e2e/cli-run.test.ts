import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RESOURCES } from '@agentbox/vm';
import { E2E_AGENTS } from '../../../../test/e2e-image.js';
import { sharedRuntime } from '../../../../test/helpers.js';
import { openRuntime } from '../../src/runtime.js';
import { cli } from '../helpers.js';

// Each `agentbox run` boots and destroys a real VM.
describe('agentbox run (real VMs)', () => {
  it('passes stdout and stderr through separately and exits with the command status', async () => {
    const r = await cli(['run', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(r).toMatchObject({ code: 7, stdout: 'out\n', stderr: 'err\n' });
  });

  it('exits 128+signal when the command is killed, and prints the profile phases', async () => {
    const r = await cli(['run', '--', 'sh', '-c', 'kill -KILL $$'], { env: { AGENTBOX_PROFILE: '1' } });
    expect(r.code).toBe(137);
    expect(r.stderr).toMatch(
      /^agentbox profile: image=\d+ms create=\d+ms boot=\d+ms handshake=\d+ms exec=\d+ms teardown=\d+ms total=\d+ms start=(clone|cold)$/m,
    );
  });

  it('applies --env, --workdir and -i (stdin)', async () => {
    const r = await cli(
      ['run', '-e', 'A=hello world', '-w', '/tmp', '-i', '--', 'sh', '-c', 'echo "$A|$(pwd)|$(cat)"'],
      { stdin: 'from stdin' },
    );
    expect(r).toMatchObject({ code: 0, stdout: 'hello world|/tmp|from stdin\n' });
  });

  it('kills the command at --timeout and exits 124', async () => {
    const r = await cli(['run', '--timeout', '1', '--', 'sleep', '300']);
    expect(r.code).toBe(124);
    expect(r.stderr).toMatch(/timed out after 1s/);
  });

  it("clones the image's template when one is built, a fresh machine each time; --cold boots", async () => {
    const rt = await sharedRuntime();
    await rt.backend.ensureTemplate(rt.image, DEFAULT_RESOURCES);
    const env = { AGENTBOX_PROFILE: '1' };
    const script = 'hostname; cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1';
    const runs = [
      await cli(['run', '--', 'sh', '-c', script], { env }),
      await cli(['run', '--', 'sh', '-c', script], { env }),
    ];
    for (const r of runs) {
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/ start=clone$/m);
      expect(r.stdout.split('\n')[0]).toMatch(/^run-[0-9a-f]{10}$/);
    }
    // Two clones of one snapshot share no identity and no randomness.
    const [a, b] = runs.map((r) => r.stdout.trim().split('\n'));
    for (let line = 0; line < 3; line++) expect(a![line]).not.toBe(b![line]);

    const cold = await cli(['run', '--cold', '--', 'true'], { env });
    expect(cold.code).toBe(0);
    expect(cold.stderr).toMatch(/ start=cold$/m);
    // Another size has no template: a cold boot, not a build.
    const other = await cli(['run', '--memory', '640', '--', 'true'], { env });
    expect(other.stderr).toMatch(/ start=cold$/m);
    expect(await rt.backend.findTemplate(rt.image, { ...DEFAULT_RESOURCES, memoryMib: 640 })).toBeUndefined();
  });

  it('boots cold when the template does not restore, and drops that template', async () => {
    // A home of its own (the shared image linked in): the broken template must not reach other tests.
    const shared = await sharedRuntime();
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-run-e2e-'));
    fs.symlinkSync(path.join(shared.home, 'images'), path.join(home, 'images'));
    const before = process.env.AGENTBOX_HOME;
    process.env.AGENTBOX_HOME = home;
    try {
      const rt = await openRuntime({ agents: E2E_AGENTS });
      const template = await rt.backend.ensureTemplate(rt.image, DEFAULT_RESOURCES);
      fs.writeFileSync(path.join(template.dir, 'state'), 'not a migration stream');
      const r = await cli(['run', '--', 'echo', 'booted'], {
        env: { AGENTBOX_HOME: home, AGENTBOX_PROFILE: '1' },
      });
      expect(r).toMatchObject({ code: 0, stdout: 'booted\n' });
      expect(r.stderr).toMatch(/ start=cold$/m);
      expect(await rt.backend.findTemplate(rt.image, DEFAULT_RESOURCES)).toBeUndefined();
      expect(fs.readdirSync(path.join(home, 'boxes'))).toEqual([]);
    } finally {
      if (before === undefined) delete process.env.AGENTBOX_HOME;
      else process.env.AGENTBOX_HOME = before;
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});
