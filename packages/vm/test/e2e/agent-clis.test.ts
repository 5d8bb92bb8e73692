import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Vm } from '../../src/backend.js';
import type { ImageManifest } from '../../src/image/manifest.js';
import { AGENT_CLIS } from '../../src/image/recipe.js';
import { E2E_AGENTS, bootBox, destroyAll, leftovers, run, sharedRuntime } from '../../../../test/helpers.js';

/** Runs a command in the box; a failure shows its output. */
async function sh(vm: Vm, script: string, timeoutMs = 120_000): Promise<string> {
  const r = await run(vm, script, { timeoutMs });
  const stdout = r.stdout.toString();
  expect(r.exit.exitCode, `${script}\n${stdout}\n${r.stderr}`).toBe(0);
  return stdout;
}

describe('the agent CLIs and tools in the image, run in a box', () => {
  let vm: Vm;
  let manifest: ImageManifest;
  beforeAll(async () => {
    manifest = (await sharedRuntime()).image.manifest;
    vm = await bootBox({ memoryMib: 1024 });
  });
  afterAll(async () => {
    const id = vm.id;
    await destroyAll();
    expect(leftovers(id)).toEqual({ processes: [], files: false });
  });

  it('the manifest records every e2e agent at its pinned version', () => {
    expect(manifest.agents).toEqual(Object.fromEntries(E2E_AGENTS.map((a) => [a, AGENT_CLIS[a].version])));
  });

  it('claude, codex and opencode run from /usr/local/bin and print the manifest versions', async () => {
    const claude = await sh(vm, 'command -v claude && claude --version');
    expect(claude).toBe(`/usr/local/bin/claude\n${manifest.agents.claude} (Claude Code)\n`);
    const codex = await sh(vm, 'command -v codex && codex --version');
    expect(codex).toBe(`/usr/local/bin/codex\ncodex-cli ${manifest.agents.codex}\n`);
    // A Bun binary that evaluates a large bundle at start: ~20 s of emulated CPU under TCG.
    const opencode = await sh(vm, 'command -v opencode && opencode --version');
    expect(opencode).toBe(`/usr/local/bin/opencode\n${manifest.agents.opencode}\n`);
  });

  it('each CLI has its quiet, no-self-update system config', async () => {
    const settings = JSON.parse(await sh(vm, 'cat /etc/claude-code/managed-settings.json')) as {
      env: Record<string, string>;
    };
    expect(settings.env).toMatchObject({
      DISABLE_AUTOUPDATER: '1',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    });
    expect(await sh(vm, 'cat /etc/codex/config.toml')).toMatch(/^check_for_update_on_startup = false$/m);
    expect(JSON.parse(await sh(vm, 'cat /etc/opencode/opencode.json'))).toMatchObject({ autoupdate: false });
    // The image's directories keep their modes under the agents layer.
    expect(await sh(vm, 'stat -c %a /root /etc /usr/local/bin')).toBe('700\n755\n755\n');
  });

  it('python3 makes a venv with pip; rg, jq, a C compiler, sudo, wget and zip work', async () => {
    const pip = await sh(vm, 'python3 -m venv /tmp/venv && /tmp/venv/bin/python -m pip --version');
    expect(pip).toMatch(/^pip \d+\.\d+.* from \/tmp\/venv\//);
    expect(await sh(vm, 'rg --version | head -1')).toMatch(/^ripgrep \d+\.\d+/);
    expect(await sh(vm, 'jq --version')).toMatch(/^jq-\d+\.\d+/);
    expect(await sh(vm, 'cc --version | head -1')).toMatch(/^cc \(Debian \S+\) \d+\.\d+/);
    const built = await sh(
      vm,
      'printf "int main(void) { return 42; }\\n" > /tmp/t.c && cc -o /tmp/t /tmp/t.c; /tmp/t; echo $?',
    );
    expect(built).toBe('42\n');
    expect(await sh(vm, 'echo \'{"a":[1,2]}\' | jq -c .a')).toBe('[1,2]\n');
    // What setup scripts reach for: sudo (root already: it runs the command), wget, zip/unzip.
    expect(await sh(vm, 'sudo -n id -un 2>&1')).toBe('root\n');
    expect(await sh(vm, 'wget --version | head -1')).toMatch(/^GNU Wget \d/);
    const zipped = await sh(
      vm,
      'cd /tmp && echo z > z.txt && zip -q z.zip z.txt && rm z.txt && unzip -q z.zip && cat z.txt',
    );
    expect(zipped).toBe('z\n');
  });

  it('the shell environment is ready: HOME, PATH, and profile.d in non-login shells', async () => {
    const env = await sh(vm, 'echo "$HOME|$PATH"');
    expect(env).toMatch(/^\/root\|(.*:)?\/usr\/local\/bin(:.*)?\n$/);
    // An interactive non-login bash (what an agent's shell tool starts) sees the proxy settings.
    const proxy = await sh(vm, 'env -u HTTPS_PROXY bash -ic \'echo "$HTTPS_PROXY"\' 2>/dev/null');
    expect(proxy).toMatch(/^http:\/\/127\.0\.0\.1:\d+\n$/);
  });
});
