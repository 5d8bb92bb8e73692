import { describe, expect, it } from 'vitest';
import { githubRepoOfRequest, repoFromGitUrl } from '../../src/index.js';

describe('GitHub request → repository', () => {
  const CASES: Array<[string, string, string | undefined]> = [
    ['github.com', '/acme/widgets.git/info/refs?service=git-upload-pack', 'acme/widgets'],
    ['github.com', '/acme/widgets/info/refs?service=git-receive-pack', 'acme/widgets'],
    ['github.com', '/Acme/Widgets.git/git-upload-pack', 'acme/widgets'],
    ['github.com', '/acme/widgets.git/git-receive-pack', 'acme/widgets'],
    ['github.com', '/acme/widgets.git/info/lfs/objects/batch', 'acme/widgets'],
    ['github.com', '/acme/widgets', undefined],
    ['github.com', '/acme/widgets/pulls', undefined],
    ['github.com', '/acme/widgets.git/info/refs/extra', undefined],
    ['github.com', '/login', undefined],
    ['github.com', '/acme/./widgets/info/refs', undefined],
    ['github.com', '//acme/widgets/info/refs', undefined],
    ['github.com', '/acme/wid%67ets/info/refs', 'acme/widgets'],
    ['github.com', '/acme%2Fother/widgets/info/refs', undefined],
    ['github.com', '/acme/widgets%5C..%5Cx/info/refs', undefined],
    ['github.com', '/acme/%zz/info/refs', undefined],
    ['api.github.com', '/repos/acme/widgets', 'acme/widgets'],
    ['api.github.com', '/repos/acme/widgets/', 'acme/widgets'],
    ['api.github.com', '/repos/acme/widgets/contents/a/b.txt?ref=main', 'acme/widgets'],
    ['api.github.com', '/repos/acme/widgets/../other', undefined],
    ['api.github.com', '/repos/acme', undefined],
    ['api.github.com', '/orgs/acme/repos', undefined],
    ['api.github.com', '/graphql', undefined],
    ['uploads.github.com', '/repos/acme/widgets/releases/1/assets', 'acme/widgets'],
    ['codeload.github.com', '/acme/widgets/tar.gz/refs/heads/main', 'acme/widgets'],
    ['raw.githubusercontent.com', '/acme/widgets/main/README.md', 'acme/widgets'],
    ['raw.githubusercontent.com', '/acme/widgets', undefined],
    ['gist.github.com', '/acme/123', undefined],
  ];
  it.each(CASES)('%s %s → %s', (host, target, repo) => {
    const found = githubRepoOfRequest(host, target);
    expect(found.kind === 'repo' ? found.repo : undefined).toBe(repo);
  });

  it('reads owner/name from https clone URLs only', () => {
    expect(repoFromGitUrl('https://github.com/Acme/Widgets.git')).toBe('acme/widgets');
    expect(repoFromGitUrl('https://github.com/acme/widgets')).toBe('acme/widgets');
    expect(repoFromGitUrl('git@github.com:acme/widgets.git')).toBeUndefined();
    expect(repoFromGitUrl('https://gitlab.com/acme/widgets.git')).toBeUndefined();
    expect(repoFromGitUrl('https://github.com/acme/widgets/tree/main')).toBeUndefined();
  });
});
