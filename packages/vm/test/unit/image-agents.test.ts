import { describe, expect, it } from 'vitest';
import { isAgentboxError } from '@agentbox/protocol';
import { agentClisFromEnv, agentVersions, agentsKey, parseAgentClis } from '../../src/image/agents.js';
import { imageId } from '../../src/image/build.js';
import { ImageManifestSchema } from '../../src/image/manifest.js';
import { AGENT_CLIS, AGENT_CLI_NAMES, DEFAULT_AGENT_CLIS } from '../../src/image/recipe.js';
import { baseLayerPath, rootfsCachePaths, rootfsKey } from '../../src/image/rootfs.js';

const kernel = { package: 'linux-source-6.1', version: '6.1.192-3' };
const ALL = ['claude', 'codex', 'opencode'] as const;

function parseError(value: string): string {
  try {
    parseAgentClis(value);
  } catch (err) {
    expect(isAgentboxError(err) && err.code).toBe('invalid_request');
    return (err as Error).message;
  }
  throw new Error(`${JSON.stringify(value)} parsed`);
}

describe('agent list parsing', () => {
  it('puts a list in canonical order, without duplicates, whatever the spelling', () => {
    expect(parseAgentClis('claude')).toEqual(['claude']);
    expect(parseAgentClis('opencode,claude')).toEqual(['claude', 'opencode']);
    expect(parseAgentClis(' Codex , claude,codex,')).toEqual(['claude', 'codex']);
    expect(parseAgentClis(['opencode', 'codex,claude'])).toEqual([...ALL]);
  });

  it('rejects unknown names with the known ones, and an empty list', () => {
    expect(parseError('claude,gemini')).toBe('unknown agent "gemini"; known agents: claude, codex, opencode');
    expect(parseError('aider,cursor')).toMatch(/^unknown agent "aider", "cursor"; known agents/);
    expect(parseError(' , ')).toBe('name at least one agent: claude, codex, opencode');
  });

  it('takes $AGENTBOX_AGENTS, else claude alone', () => {
    expect(agentClisFromEnv({})).toEqual(['claude']);
    expect(agentClisFromEnv({ AGENTBOX_AGENTS: '  ' })).toEqual([...DEFAULT_AGENT_CLIS]);
    expect(agentClisFromEnv({ AGENTBOX_AGENTS: 'codex,opencode' })).toEqual(['codex', 'opencode']);
    expect(() => agentClisFromEnv({ AGENTBOX_AGENTS: 'nope' })).toThrow(/unknown agent "nope"/);
  });
});

describe('agent recipe', () => {
  it('pins exact versions of the three CLIs', () => {
    expect(AGENT_CLI_NAMES).toEqual([...ALL]);
    for (const name of AGENT_CLI_NAMES) expect(AGENT_CLIS[name].version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(agentVersions(['claude', 'opencode'])).toEqual({
      claude: AGENT_CLIS.claude.version,
      opencode: AGENT_CLIS.opencode.version,
    });
  });

  it('keeps every link and pruned path inside the package, and config at absolute guest paths', () => {
    for (const name of AGENT_CLI_NAMES) {
      const recipe = AGENT_CLIS[name];
      const paths = [...recipe.nativeLinks.flat(), ...recipe.prune];
      for (const p of paths) expect(p).toMatch(/^(bin|node_modules)\/[^.][^]*$/);
      for (const p of paths) expect(p).not.toContain('..');
      for (const p of Object.keys(recipe.config)) expect(p).toMatch(/^\/(etc|root)\/[^]*[^/]$/);
    }
  });
});

describe('image identity', () => {
  it('names each agent set its own layer, rootfs and image, in any order', () => {
    expect(agentsKey(['opencode', 'claude'])).toBe(agentsKey(['claude', 'opencode']));
    expect(agentsKey(['claude'])).not.toBe(agentsKey([...ALL]));
    expect(rootfsKey(['claude'])).not.toBe(rootfsKey([...ALL]));
    expect(rootfsKey(['codex', 'claude', 'opencode'])).toBe(rootfsKey([...ALL]));
    const sha = 'a'.repeat(64);
    expect(imageId(kernel, sha, ['claude'])).not.toBe(imageId(kernel, sha, ['claude', 'codex']));
    expect(imageId(kernel, sha, ['claude'])).toMatch(/^[0-9a-f]{24}$/);
    // The spawn helper and the kernel source are part of what an image is.
    expect(imageId(kernel, sha, ['claude'], 'b'.repeat(64))).not.toBe(imageId(kernel, sha, ['claude']));
    expect(imageId({ ...kernel, version: '6.1.193-1' }, sha, ['claude'])).not.toBe(
      imageId(kernel, sha, ['claude']),
    );
  });

  it('shares one Debian base layer between agent sets, found without naming any agent', () => {
    // A fresh machine builds the base before any agents layer exists; its path needs no agent set.
    const home = '/tmp/agentbox-home';
    expect(baseLayerPath(home)).toMatch(/\/rootfs\/base-[0-9a-f]{24}\.tar$/);
    expect(rootfsCachePaths(home, ['claude']).base).toBe(baseLayerPath(home));
    expect(rootfsCachePaths(home, [...ALL]).base).toBe(baseLayerPath(home));
  });
});

describe('image manifest', () => {
  const manifest = {
    id: '0123456789abcdef01234567',
    imageApiVersion: 1,
    builtAt: '2026-01-01T00:00:00.000Z',
    buildSeconds: 100,
    debianSuite: 'bookworm',
    kernel: { ...kernel, release: '6.1.192-agentbox' },
    rootfs: { key: 'k', packages: ['git'] },
    agent: { version: '0.1.0', sha256: 'b'.repeat(64) },
    agents: { claude: '2.1.330', codex: '0.169.0' },
    components: { git: '1:2.39.5-0+deb12u2', node: '22.23.3' },
    files: { kernel: 'vmlinux', initrd: 'initrd.cpio', rootfs: 'rootfs.img' },
    sizes: { kernelBytes: 1, initrdBytes: 2, rootfsBytes: 3 },
  };

  it('records the agent CLIs and their versions', () => {
    expect(ImageManifestSchema.parse(manifest).agents).toEqual({ claude: '2.1.330', codex: '0.169.0' });
    expect(ImageManifestSchema.parse({ ...manifest, agents: {} }).agents).toEqual({});
  });

  it('rejects an unknown agent, and a manifest from before agents were recorded', () => {
    expect(ImageManifestSchema.safeParse({ ...manifest, agents: { gemini: '1.0.0' } }).success).toBe(false);
    const older: Partial<typeof manifest> = { ...manifest };
    delete older.agents;
    expect(ImageManifestSchema.safeParse(older).success).toBe(false);
  });
});
