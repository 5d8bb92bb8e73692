import { execFileSync } from 'node:child_process';
import { createEgressGateway, isInjectableSecret, type EgressGateway } from '@agentbox/egress';
import type { EgressPolicyInput } from '@agentbox/protocol';
import { attachEgress } from '@agentbox/host';
import type { GuestConnection } from '@agentbox/vm';
import { egressOptionsFromEnv, testUpstreamMap } from '../commands/serve.js';
import { githubRepoOfRemote } from './github-repo.js';

export type ProjectAgent = 'claude' | 'codex' | 'opencode' | 'shell';

/** The GitHub repositories of the project's remotes (`git remote -v`), deduplicated. */
export function reposFromGitRemotes(root: string): string[] {
  let out = '';
  try {
    out = execFileSync('git', ['-C', root, 'remote', '-v'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    return [];
  }
  const repos = new Set<string>();
  for (const line of out.split('\n')) {
    const url = line.split(/\s+/)[1];
    const repo = url ? githubRepoOfRemote(url) : undefined;
    if (repo) repos.add(repo.toLowerCase());
  }
  return [...repos];
}

/**
 * Credentials the host has for the agents and GitHub: ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN,
 * OPENAI_API_KEY, GITHUB_TOKEN (from GH_TOKEN, GITHUB_TOKEN, or `gh auth token`). They stay in
 * this process; the box only sees placeholders.
 */
export function hostCredentials(
  env: NodeJS.ProcessEnv = process.env,
  withGithub = true,
): Record<string, string> {
  const creds: Record<string, string> = {};
  for (const name of ['ANTHROPIC_API_KEY', 'CLAUDE_CODE_OAUTH_TOKEN', 'OPENAI_API_KEY']) {
    const value = env[name];
    if (value) creds[name] = value;
  }
  if (withGithub) {
    let token = env.GH_TOKEN || env.GITHUB_TOKEN;
    if (!token) {
      try {
        token = execFileSync('gh', ['auth', 'token'], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
          timeout: 5000,
        }).trim();
      } catch {
        // no gh, or not logged in
      }
    }
    if (token) creds.GITHUB_TOKEN = token;
  }
  return Object.fromEntries(Object.entries(creds).filter(([name]) => isInjectableSecret(name)));
}

export interface ProjectEgressOptions {
  agent: ProjectAgent;
  repos: string[];
  allowIPs: string[];
  allowLan: boolean;
  allowHost: boolean;
  git: boolean;
}

/** The box's policy: its agent's API, npm and PyPI, and GitHub for the project's repos only. */
export function projectPolicy(options: ProjectEgressOptions): EgressPolicyInput {
  const presets: NonNullable<EgressPolicyInput['presets']> = ['npm', 'pypi'];
  if (options.agent === 'claude' || options.agent === 'opencode' || options.agent === 'shell')
    presets.push('anthropic');
  if (options.agent === 'codex' || options.agent === 'opencode' || options.agent === 'shell')
    presets.push('openai');
  const repos = options.git ? options.repos : [];
  if (repos.length > 0) presets.push('github');
  return {
    presets,
    repos,
    allowIPs: options.allowIPs,
    allowLan: options.allowLan,
    allowHost: options.allowHost,
    ...(testUpstreamMap().egressTestUpstreams ? { upstreams: testUpstreamMap().egressTestUpstreams } : {}),
  };
}

/**
 * A gateway in this process for the box while the command runs: the box's proxy connections come
 * here over the guest channel. Installs the box CA and the placeholders in the guest.
 */
export async function attachProjectEgress(
  boxId: string,
  guest: GuestConnection,
  options: ProjectEgressOptions,
): Promise<EgressGateway> {
  const gateway = createEgressGateway(await egressOptionsFromEnv());
  const secretValues = hostCredentials(process.env, options.git);
  const session = await gateway.openBox({
    boxId,
    policy: projectPolicy(options),
    ...(Object.keys(secretValues).length > 0 ? { secretValues } : {}),
  });
  await attachEgress(guest, session);
  if (session.env.GITHUB_TOKEN) await guest.configure({ GH_TOKEN: session.env.GITHUB_TOKEN });
  return gateway;
}
