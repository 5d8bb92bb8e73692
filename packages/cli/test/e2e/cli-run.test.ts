import { describe, expect, it } from 'vitest';
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
      /^agentbox profile: image=\d+ms create=\d+ms boot=\d+ms handshake=\d+ms exec=\d+ms teardown=\d+ms total=\d+ms$/m,
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
});
