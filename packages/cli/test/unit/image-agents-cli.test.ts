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

describe('agentbox image prune', () => {
  it('lists what it would remove and keeps everything with --dry-run; removes it without', async () => {
    const stale = path.join(home, 'templates', 'tpl-0123abcd');
    fs.mkdirSync(stale, { recursive: true });
    fs.writeFileSync(path.join(stale, 'manifest.json'), JSON.stringify({ imageId: 'f'.repeat(24) }));
    const dry = await cli(['image', 'prune', '--dry-run'], { env: { AGENTBOX_HOME: home } });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(
      new RegExp(`^would remove template ${stale}: 0 MiB\nwould free 0 MiB in 1 item\\(s\\)\n$`),
    );
    expect(fs.existsSync(stale)).toBe(true);
    const json = await cli(['image', 'prune', '--json'], { env: { AGENTBOX_HOME: home } });
    expect(JSON.parse(json.stdout)).toMatchObject({
      removed: true,
      kept: [],
      remove: [{ kind: 'template', path: stale }],
    });
    expect(fs.existsSync(stale)).toBe(false);
    const again = await cli(['image', 'prune'], { env: { AGENTBOX_HOME: home } });
    expect(again.stdout).toBe('nothing to remove\n');
  });
});
