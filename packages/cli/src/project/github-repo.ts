import { AgentboxError } from '@agentbox/protocol';

// Kept apart from project-egress.ts: main.ts checks --repo with it, and must not load the egress stack.

const GITHUB_REPO = /^[A-Za-z0-9](?:[A-Za-z0-9-]*)\/[A-Za-z0-9._-]+$/;

/** `owner/name` of a GitHub remote URL (https, ssh or scp form), or undefined. */
export function githubRepoOfRemote(url: string): string | undefined {
  const m =
    /^(?:https?:\/\/(?:[^@/]+@)?github\.com\/|ssh:\/\/git@github\.com(?::\d+)?\/|git@github\.com:)([^/]+)\/([^/]+?)(?:\.git)?\/?$/i.exec(
      url.trim(),
    );
  if (!m) return undefined;
  const repo = `${m[1]}/${m[2]}`;
  return GITHUB_REPO.test(repo) ? repo : undefined;
}

/**
 * `--repo` of the project commands: OWNER/NAME, or the https URL that `task run --repo` takes
 * (`https://github.com/OWNER/NAME`, `.git` optional), as lower-case OWNER/NAME. Nothing looser
 * (no credentials in the URL, no other host or scheme): this names what the box may reach.
 */
export function parseRepo(value: string): string {
  const url = /^https:\/\/github\.com\/([^/?#]+\/[^/?#]+)\/?$/i.exec(value);
  const repo = (url ? url[1]! : value).toLowerCase().replace(/\.git$/, '');
  if (!GITHUB_REPO.test(repo))
    throw new AgentboxError(
      'invalid_request',
      `--repo expects OWNER/NAME or https://github.com/OWNER/NAME, got ${JSON.stringify(value)}`,
    );
  return repo;
}
