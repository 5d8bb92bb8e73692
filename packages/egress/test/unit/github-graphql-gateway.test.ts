import http from 'node:http';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GITHUB_GRAPHQL_MAX_BODY_BYTES } from '../../src/index.js';
import { fakeGraphqlApi } from '../helpers/fake-github.js';
import {
  connect,
  createTestCa,
  proxyHttps,
  startHarness,
  startHttpsUpstream,
  type FakeUpstream,
  type Harness,
  type ProxyResponse,
} from '../helpers/egress-harness.js';

/**
 * GitHub GraphQL through the real gateway, for a box limited to acme/widgets that lists the
 * `RepositoryInfo` query: the listed query on the listed repository reaches the fake
 * api.github.com with the real token (re-serialized as judged); anything else is a 403 with
 * X-Agentbox-Deny and an audit record, and the upstream never sees it.
 */

const REAL_TOKEN = 'ghp_REALgraphqlTOKEN0000000000';
const REPO_INFO =
  'query RepositoryInfo($owner: String!, $name: String!) { repository(owner: $owner, name: $name) { nameWithOwner } }';

let upstream: FakeUpstream;
let h: Harness;

beforeAll(async () => {
  const ca = await createTestCa();
  upstream = await startHttpsUpstream(ca, ['api.github.com']);
  upstream.handler = fakeGraphqlApi(REAL_TOKEN);
  h = await startHarness({
    upstreamCaPem: ca.certPem,
    secrets: { GITHUB_TOKEN: REAL_TOKEN },
    policy: {
      presets: ['github'],
      repos: ['acme/widgets'],
      githubGraphqlOperations: ['RepositoryInfo'],
      upstreams: { 'api.github.com': `127.0.0.1:${upstream.port}` },
    },
  });
});

afterAll(async () => {
  await h.close();
  await upstream.close();
});

function graphql(body: string, options: { method?: string; path?: string } = {}) {
  return proxyHttps(h.proxyPort, 'api.github.com', options.path ?? '/graphql', {
    ca: [h.box.caCertPem],
    method: options.method ?? 'POST',
    headers: {
      authorization: `bearer ${h.box.env.GITHUB_TOKEN!}`,
      'content-type': 'application/json',
    },
    body,
  });
}

function expectRefused(res: ProxyResponse, seenBefore: number, reason: RegExp): void {
  expect(res.status).toBe(403);
  expect(res.headers['x-agentbox-deny']).toBe('github_repo_not_allowed');
  expect(res.body).toMatch(reason);
  expect(upstream.seen.length).toBe(seenBefore);
  const record = h.audit.records.at(-1)!;
  expect(record).toMatchObject({
    decision: 'deny',
    code: 'github_repo_not_allowed',
    host: 'api.github.com',
    path: '/graphql',
  });
  expect(record.reason).toMatch(reason);
  expect(JSON.stringify(h.audit.records)).not.toContain(REAL_TOKEN);
}

describe('GitHub GraphQL through the gateway', () => {
  it('passes a listed query on a listed repository with the real token injected', async () => {
    const res = await graphql(
      JSON.stringify({ query: REPO_INFO, variables: { owner: 'acme', name: 'widgets' } }),
    );
    expect(res.status).toBe(200);
    const answer = JSON.parse(res.body) as { data: unknown; received: Record<string, unknown> };
    expect(answer.data).toEqual({ repository: { nameWithOwner: 'acme/widgets' } });
    expect(answer.received).toMatchObject({
      operationName: 'RepositoryInfo',
      variables: { owner: 'acme', name: 'widgets' },
    });
    const seen = upstream.seen.at(-1)!;
    expect(seen.headers.authorization).toBe(`bearer ${REAL_TOKEN}`);
    expect(seen.headers['content-length']).toBe(String(Buffer.byteLength(seen.body)));
    expect(res.body).not.toContain(REAL_TOKEN);
    const record = h.audit.records.at(-1)!;
    expect(record).toMatchObject({
      decision: 'allow',
      mode: 'intercept',
      host: 'api.github.com',
      path: '/graphql',
      injected: ['GITHUB_TOKEN'],
    });
    expect(record.reason).toMatch(/GraphQL query RepositoryInfo on acme\/widgets/);
  });

  it('refuses the listed query aimed at another repository; GitHub never sees it', async () => {
    const before = upstream.seen.length;
    const res = await graphql(
      JSON.stringify({ query: REPO_INFO, variables: { owner: 'acme', name: 'secret' } }),
    );
    expectRefused(res, before, /acme\/secret/);
  });

  it('refuses an unlisted operation, and flags a placeholder in its body', async () => {
    const before = upstream.seen.length;
    const body = JSON.stringify({
      query: 'query Exfil($t: String!) { repository(owner: "acme", name: "widgets") { id } }',
      variables: { t: h.box.env.GITHUB_TOKEN },
    });
    const res = await graphql(body);
    expectRefused(res, before, /query Exfil is not in/);
    expect(h.audit.records.at(-1)!.placeholderLeak).toBe(true);
  });

  it('refuses a batch and malformed JSON', async () => {
    const before = upstream.seen.length;
    expectRefused(await graphql(JSON.stringify([{ query: REPO_INFO }])), before, /batched/);
    expectRefused(await graphql('{"query": '), before, /not JSON/);
  });

  it('refuses GraphQL by GET with the query in the query string', async () => {
    const before = upstream.seen.length;
    const res = await graphql('', {
      method: 'GET',
      path: `/graphql?query=${encodeURIComponent('{ viewer { login } }')}`,
    });
    expect(res.status).toBe(403);
    expect(res.headers['x-agentbox-deny']).toBe('github_repo_not_allowed');
    expect(upstream.seen.length).toBe(before);
    expect(h.audit.records.at(-1)).toMatchObject({ decision: 'deny', method: 'GET', path: '/graphql' });
  });

  it('refuses an oversize body by its Content-Length, without reading it', async () => {
    const before = upstream.seen.length;
    const huge = JSON.stringify({ query: `${REPO_INFO} #${'x'.repeat(GITHUB_GRAPHQL_MAX_BODY_BYTES)}` });
    expectRefused(await graphql(huge), before, /larger than/);
  });

  it('refuses an oversize chunked body once it passes the cap', async () => {
    const before = upstream.seen.length;
    const tunnel = await connect(h.proxyPort, 'api.github.com:443');
    const secure = tls.connect({
      socket: tunnel.socket!,
      servername: 'api.github.com',
      ca: [h.box.caCertPem],
    });
    await new Promise((resolve) => secure.once('secureConnect', resolve));
    const res = await new Promise<ProxyResponse>((resolve, reject) => {
      const req = http.request({
        createConnection: () => secure,
        method: 'POST',
        path: '/graphql',
        headers: { host: 'api.github.com', 'transfer-encoding': 'chunked' },
      });
      req.on('response', (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () =>
          resolve({ status: r.statusCode ?? 0, headers: r.headers, body: Buffer.concat(chunks).toString() }),
        );
      });
      req.on('error', reject);
      const chunk = Buffer.alloc(64 * 1024, 'x');
      for (let i = 0; i < 5; i++) req.write(chunk);
      req.end();
    });
    secure.destroy();
    expectRefused(res, before, /larger than/);
  });
});
