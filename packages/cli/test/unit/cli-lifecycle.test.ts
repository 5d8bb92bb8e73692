import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Box } from '@agentbox/protocol';
import { AgentboxClient, type Sandbox } from '@agentbox/sdk';
import { sdkDaemon, type SdkDaemon } from '../../../sdk/test/helpers/sdk-daemon.js';
import { cli } from '../helpers.js';

/** `agentbox pause|resume|hibernate` (through @agentbox/sdk) against a daemon on the fake driver. */
describe('agentbox pause, resume, hibernate', () => {
  let d: SdkDaemon;
  let flags: string[];
  let box: Sandbox;
  beforeAll(async () => {
    d = await sdkDaemon();
    flags = ['--url', d.url, '--key', d.admin];
    box = await new AgentboxClient({ url: d.url, apiKey: d.admin }).boxes.create();
  });
  afterAll(() => d.close());

  it('pauses and resumes a box, printing its new state', async () => {
    const paused = await cli(['pause', box.id, ...flags]);
    expect(paused.code, paused.stderr).toBe(0);
    expect(paused.stdout).toMatch(new RegExp(`^${box.id} paused \\(\\d+ ms\\)\\n$`));
    expect((await box.refresh()).state).toBe('paused');
    const resumed = await cli(['resume', box.id, '--json', ...flags]);
    expect(JSON.parse(resumed.stdout) as Box).toMatchObject({ id: box.id, state: 'running' });
  }, 60_000);

  it('a refusal is one line and exit 125', async () => {
    const refused = await cli(['hibernate', box.id, ...flags]);
    expect(refused).toMatchObject({ code: 125, stdout: '' });
    expect(refused.stderr).toMatch(/^agentbox: .*hibernate.*\n$/);
    const missing = await cli(['pause', 'box-0000000000', ...flags]);
    expect(missing.code).toBe(125);
    expect(missing.stderr).toMatch(/box-0000000000/);
  }, 60_000);
});
