/**
 * Which GitHub repository a request is about, from its host and path. Pure. Paths are split into
 * percent-decoded segments and refused outright when a segment could be normalized away upstream
 * (`..`, `.`, encoded `/` or `\`, empty segments), so `/repos/ok/ok/../../other/x` never passes as
 * `ok/ok`.
 */

/** Hosts governed by a box's `repos` list: every request to them must name a listed repository. */
export const GITHUB_HOSTS: ReadonlySet<string> = new Set([
  'github.com',
  'api.github.com',
  'uploads.github.com',
  'codeload.github.com',
  'raw.githubusercontent.com',
]);

/** True for hosts a `repos` list governs: the hosts above and any other `*.github.com`. */
export function isGitHubHost(host: string): boolean {
  return GITHUB_HOSTS.has(host) || host.endsWith('.github.com');
}

export type GitHubPathResult =
  { readonly kind: 'repo'; readonly repo: string } | { readonly kind: 'none'; readonly reason: string };

/** Splits a request target's path into decoded segments; undefined when it is not safe to judge. */
export function safePathSegments(target: string): string[] | undefined {
  const q = target.search(/[?#]/);
  const path = q < 0 ? target : target.slice(0, q);
  if (!path.startsWith('/')) return undefined;
  const raw = path.slice(1).split('/');
  const segments: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    let seg: string;
    try {
      seg = decodeURIComponent(raw[i]!);
    } catch {
      return undefined;
    }
    if (seg === '' && i === raw.length - 1 && i > 0) continue; // one trailing slash
    if (seg === '' || seg === '.' || seg === '..' || /[/\\\0]/.test(seg)) return undefined;
    segments.push(seg);
  }
  return segments;
}

const GIT_SMART_HTTP = new Set(['info/refs', 'git-upload-pack', 'git-receive-pack']);

/** Canonical `owner/name` (lowercase, `.git` dropped), or undefined when either part is not a valid name. */
export function repoOf(owner: string | undefined, name: string | undefined): string | undefined {
  if (owner === undefined || name === undefined) return undefined;
  const repo = name.replace(/\.git$/i, '');
  if (!/^[A-Za-z0-9-]+$/.test(owner) || !/^[A-Za-z0-9._-]+$/.test(repo)) return undefined;
  return `${owner}/${repo}`.toLowerCase();
}

/** The repository a GitHub request targets, or why it targets none. */
export function githubRepoOfRequest(host: string, target: string): GitHubPathResult {
  const segs = safePathSegments(target);
  if (segs === undefined) return { kind: 'none', reason: 'the path has dot segments or encoded separators' };
  let repo: string | undefined;
  switch (host) {
    case 'github.com': {
      // /<owner>/<repo>(.git)?/(info/refs|git-upload-pack|git-receive-pack) and git LFS under info/lfs
      const rest = segs.slice(2).join('/');
      if (GIT_SMART_HTTP.has(rest) || (segs[2] === 'info' && segs[3] === 'lfs'))
        repo = repoOf(segs[0], segs[1]);
      break;
    }
    case 'api.github.com':
    case 'uploads.github.com':
      if (segs[0] === 'repos') repo = repoOf(segs[1], segs[2]);
      break;
    case 'codeload.github.com':
    case 'raw.githubusercontent.com':
      if (segs.length >= 3) repo = repoOf(segs[0], segs[1]);
      break;
    default:
      break;
  }
  return repo === undefined
    ? { kind: 'none', reason: 'not a repository path this box may use' }
    : { kind: 'repo', repo };
}

/**
 * True for anything aimed at GitHub's GraphQL endpoint (`api.github.com/graphql`, in any case,
 * with any suffix or query), which is judged by its body rather than its path.
 */
export function isGitHubGraphqlTarget(host: string, target: string): boolean {
  return host === 'api.github.com' && safePathSegments(target)?.[0]?.toLowerCase() === 'graphql';
}

/** `owner/name` of a GitHub https clone URL (how the daemon fills `repos` from a task's gitRepoUrl). */
export function repoFromGitUrl(url: string): string | undefined {
  const m = /^https:\/\/(?:www\.)?github\.com\/([^/]+)\/([^/]+?)(?:\.git)?\/?$/i.exec(url);
  return m === null ? undefined : repoOf(m[1], m[2]);
}
