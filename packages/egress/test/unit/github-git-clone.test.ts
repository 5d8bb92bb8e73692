import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gitHttpBackend, makeBareRepo } from '../helpers/fake-github.js';
import {
  createTestCa,
  startHarness,
  startHttpsUpstream,
  type FakeUpstream,
  type Harness,
} from '../helpers/egress-harness.js';

/**
 * A real `git clone` through the gateway: git speaks CONNECT to the proxy, trusts the box CA, and
 * the fake github.com (git http-backend) only serves requests bearing the real token, which the
 * box never has. The allow-listed repository clones; an off-list one gets 403.
 */

const execFileP = promisify(execFile);
const REAL_TOKEN = 'ghp_REALgitTOKEN000000000000000';

let dir: string;
let upstream: FakeUpstream;
let h: Harness;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'egress-git-'));
  await makeBareRepo(path.join(dir, 'srv'), 'acme', 'widgets', 'hello from widgets\n');
  await makeBareRepo(path.join(dir, 'srv'), 'acme', 'secret', 'secret repo\n');
  const ca = await createTestCa();
  upstream = await startHttpsUpstream(ca, ['github.com']);
  upstream.handler = gitHttpBackend(path.join(dir, 'srv'), REAL_TOKEN);
  h = await startHarness({
    upstreamCaPem: ca.certPem,
    secrets: { GITHUB_TOKEN: REAL_TOKEN },
    policy: {
      presets: ['github'],
      repos: ['acme/widgets'],
      upstreams: { 'github.com': `127.0.0.1:${upstream.port}` },
    },
  });
  await writeFile(path.join(dir, 'box-ca.pem'), h.box.caCertPem);
});

afterAll(async () => {
  await h.close();
  await upstream.close();
  await rm(dir, { recursive: true, force: true });
});

function gitClone(repo: string, target: string) {
  const placeholder = h.box.env.GITHUB_TOKEN!;
  return execFileP(
    'git',
    ['clone', '-q', `https://x-access-token:${placeholder}@github.com/${repo}.git`, path.join(dir, target)],
    {
      env: {
        PATH: process.env.PATH,
        HOME: dir,
        GIT_CONFIG_NOSYSTEM: '1',
        GIT_TERMINAL_PROMPT: '0',
        GIT_SSL_CAINFO: path.join(dir, 'box-ca.pem'),
        https_proxy: `http://127.0.0.1:${h.proxyPort}`,
        no_proxy: '',
      },
    },
  );
}

describe('git clone through the gateway', () => {
  it('clones the allow-listed repository; github.com receives the real token, git only the placeholder', async () => {
    await gitClone('acme/widgets', 'widgets');
    expect(await readFile(path.join(dir, 'widgets', 'README.md'), 'utf8')).toBe('hello from widgets\n');
    const authorized = upstream.seen.filter((e) => e.headers.authorization !== undefined);
    expect(authorized.length).toBeGreaterThan(0);
    for (const e of authorized) {
      expect(Buffer.from(String(e.headers.authorization).slice(6), 'base64').toString()).toBe(
        `x-access-token:${REAL_TOKEN}`,
      );
    }
    // The clone's own config keeps the URL it was given: the placeholder, never the token.
    const config = await readFile(path.join(dir, 'widgets', '.git', 'config'), 'utf8');
    expect(config).not.toContain(REAL_TOKEN);
    const injected = h.audit.records.filter((r) => r.injected?.includes('GITHUB_TOKEN'));
    expect(injected.length).toBeGreaterThan(0);
  });

  it('refuses an off-list repository with 403 github_repo_not_allowed before github.com sees it', async () => {
    const before = upstream.seen.length;
    const err = await gitClone('acme/secret', 'secret').then(
      () => undefined,
      (e: { stderr?: string }) => e,
    );
    expect(err?.stderr).toMatch(/403/);
    expect(upstream.seen.length).toBe(before);
    const record = h.audit.records.at(-1)!;
    expect(record).toMatchObject({ decision: 'deny', code: 'github_repo_not_allowed', host: 'github.com' });
  });
});
