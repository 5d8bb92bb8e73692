import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import { runCommand } from '../command.js';
import { cacheDir } from '../paths.js';
import {
  AGENT_CLIS,
  AGENT_CLI_NAMES,
  AGENT_NPM_PLATFORM,
  DEFAULT_AGENT_CLIS,
  type AgentCli,
} from './recipe.js';

/** The environment variable that picks the agent set of the image `run`, `serve` and the tests use. */
export const AGENTS_ENV = 'AGENTBOX_AGENTS';

function isAgentCli(name: string): name is AgentCli {
  return Object.hasOwn(AGENT_CLIS, name);
}

/**
 * A comma-separated agent list (`claude,codex`) or its parts, checked and put in canonical order
 * (the table's, duplicates dropped), so the same set always names the same image. Unknown names
 * are an `invalid_request` that lists the known ones.
 */
export function parseAgentClis(value: string | readonly string[]): AgentCli[] {
  const names = (typeof value === 'string' ? value.split(',') : value.flatMap((v) => v.split(',')))
    .map((n) => n.trim().toLowerCase())
    .filter((n) => n !== '');
  const unknown = names.filter((n) => !isAgentCli(n));
  if (unknown.length > 0) {
    throw new AgentboxError(
      'invalid_request',
      `unknown agent ${unknown.map((n) => JSON.stringify(n)).join(', ')}; known agents: ${AGENT_CLI_NAMES.join(', ')}`,
    );
  }
  if (names.length === 0) {
    throw new AgentboxError('invalid_request', `name at least one agent: ${AGENT_CLI_NAMES.join(', ')}`);
  }
  return AGENT_CLI_NAMES.filter((n) => names.includes(n));
}

/** The agent set from `$AGENTBOX_AGENTS` if set and not empty, else the default (claude). */
export function agentClisFromEnv(env: NodeJS.ProcessEnv = process.env): AgentCli[] {
  const value = env[AGENTS_ENV]?.trim();
  return value ? parseAgentClis(value) : [...DEFAULT_AGENT_CLIS];
}

/** Agent → pinned version, as the manifest records it. */
export function agentVersions(agents: readonly AgentCli[]): Partial<Record<AgentCli, string>> {
  return Object.fromEntries(agents.map((a) => [a, AGENT_CLIS[a].version]));
}

/** Key of the agents layer: the recipe entries of exactly these agents and how npm resolves them. */
export function agentsKey(agents: readonly AgentCli[]): string {
  const entries = parseAgentClis(agents).map((a) => [a, AGENT_CLIS[a]]);
  return createHash('sha256')
    .update(JSON.stringify({ AGENT_NPM_PLATFORM, entries }))
    .digest('hex')
    .slice(0, 24);
}

/** Where the agents layer for this set is cached. */
export function agentsLayerPath(home: string, agents: readonly AgentCli[]): string {
  return path.join(cacheDir(home), 'agents', `${agentsKey(agents)}.tar`);
}

async function isElf(file: string): Promise<boolean> {
  const handle = await fsp.open(file, 'r');
  try {
    const { buffer } = await handle.read(Buffer.alloc(4), 0, 4, 0);
    return buffer.toString('latin1') === '\x7fELF';
  } finally {
    await handle.close();
  }
}

/** Makes the installed packages what their postinstall scripts would leave, and checks the result. */
async function finishInstall(prefix: string, agent: AgentCli): Promise<void> {
  const recipe = AGENT_CLIS[agent];
  const pkgDir = path.join(prefix, 'lib/node_modules', recipe.npmPackage);
  const pkg = JSON.parse(await fsp.readFile(path.join(pkgDir, 'package.json'), 'utf8')) as {
    version?: string;
  };
  if (pkg.version !== recipe.version) {
    throw new AgentboxError(
      'internal',
      `npm installed ${recipe.npmPackage}@${pkg.version}, the recipe pins ${recipe.version}`,
    );
  }
  for (const [link, target] of recipe.nativeLinks) {
    const from = path.join(pkgDir, target);
    if (!fs.existsSync(from) || !(await isElf(from))) {
      throw new AgentboxError(
        'internal',
        `${recipe.npmPackage}@${recipe.version} has no native binary at ${target}; did npm skip its optional dependencies?`,
      );
    }
    await fsp.rm(path.join(pkgDir, link), { force: true });
    // A hard link, as the package's own postinstall makes: no second copy of a few hundred MB.
    await fsp.link(from, path.join(pkgDir, link));
    await fsp.chmod(from, 0o755);
  }
  for (const rel of recipe.prune) await fsp.rm(path.join(pkgDir, rel), { recursive: true, force: true });
  const bin = path.join(prefix, 'bin', recipe.bin);
  if (!fs.existsSync(bin)) {
    throw new AgentboxError(
      'internal',
      `${recipe.npmPackage}@${recipe.version} installed no ${recipe.bin} command`,
    );
  }
}

/**
 * The agent CLIs as a tar of files to lay over the Debian rootfs (`usr/local/...` plus their
 * system-wide config), cached by `agentsKey`. npm's downloads are cached under
 * `$AGENTBOX_HOME/cache/npm`, so rebuilding a layer does not fetch the packages again.
 */
export async function buildAgentsLayer(
  home: string,
  agents: readonly AgentCli[],
  onLine: (line: string) => void = () => {},
): Promise<string> {
  const out = agentsLayerPath(home, agents);
  if (fs.existsSync(out)) return out;
  const work = `${out}.tmp-${process.pid}`;
  const tmpTar = `${work}.tar`;
  await fsp.rm(work, { recursive: true, force: true });
  const prefix = path.join(work, 'usr/local');
  await fsp.mkdir(prefix, { recursive: true });
  try {
    if (agents.length > 0) {
      await runCommand(
        'npm',
        [
          'install',
          '--global',
          '--prefix',
          prefix,
          '--cache',
          path.join(cacheDir(home), 'npm'),
          '--prefer-offline',
          // The builder does what the install scripts would (nativeLinks); no package code runs here.
          '--ignore-scripts',
          '--no-audit',
          '--no-fund',
          '--no-update-notifier',
          '--loglevel=error',
          ...AGENT_NPM_PLATFORM,
          ...agents.map((a) => `${AGENT_CLIS[a].npmPackage}@${AGENT_CLIS[a].version}`),
        ],
        { onLine },
      );
    }
    for (const agent of agents) {
      await finishInstall(prefix, agent);
      for (const [guestPath, content] of Object.entries(AGENT_CLIS[agent].config)) {
        const file = path.join(work, guestPath);
        await fsp.mkdir(path.dirname(file), { recursive: true });
        await fsp.writeFile(file, content, { mode: 0o644 });
      }
    }
    await runCommand('tar', ['-C', work, '--numeric-owner', '--owner=0', '--group=0', '-cf', tmpTar, '.']);
    await fsp.rename(tmpTar, out);
    return out;
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
    await fsp.rm(tmpTar, { force: true });
  }
}
