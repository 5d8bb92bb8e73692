import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers.js';

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-home-'));
afterAll(() => fs.rmSync(home, { recursive: true, force: true }));

describe('agentbox image --agents', () => {
  it.each([
    [
      ['image', 'build', '--agents', 'claude,gemini'],
      /unknown agent "gemini"; known agents: claude, codex, opencode/,
    ],
    [['image', 'show', '--agents', ' , '], /name at least one agent: claude, codex, opencode/],
  ])('%j → exit 2 and one clear line', async (args, message) => {
    const r = await cli(args, { env: { AGENTBOX_HOME: home } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^agentbox: /);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('an unknown agent in $AGENTBOX_AGENTS → exit 2 and one line', async () => {
    const r = await cli(['image', 'show'], { env: { AGENTBOX_HOME: home, AGENTBOX_AGENTS: 'claude,nope' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('agentbox: unknown agent "nope"; known agents: claude, codex, opencode\n');
  });

  it('image show names the agent set it looked for and how to build it', async () => {
    const r = await cli(['image', 'show', '--agents', 'codex,claude'], { env: { AGENTBOX_HOME: home } });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'agentbox: no image with agents claude,codex has been built; run `agentbox image build --agents claude,codex`\n',
    );
  });
});
