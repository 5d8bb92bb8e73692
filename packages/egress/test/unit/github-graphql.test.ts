import { parse, print } from 'graphql';
import { describe, expect, it } from 'vitest';
import {
  compilePolicy,
  GITHUB_GRAPHQL_MAX_BODY_BYTES,
  judgeGithubGraphql,
  type GithubGraphqlPolicy,
} from '../../src/index.js';

/**
 * judgeGithubGraphql() on a table: each row is one request body and whether it may reach
 * api.github.com/graphql for a box listing acme/widgets and a few operations.
 */

const compiled = compilePolicy({
  repos: ['Acme/Widgets', 'acme/gadgets'],
  githubGraphqlOperations: ['RepositoryInfo', 'query PullRequestForBranch', 'mutation CreateIssue'],
});
const POLICY: GithubGraphqlPolicy = {
  repos: compiled.repos!,
  operations: compiled.githubGraphqlOperations,
};

const body = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const REPO_INFO = `query RepositoryInfo($owner: String!, $name: String!) {
  repository(owner: $owner, name: $name) { id name defaultBranchRef { name } }
}`;

interface Row {
  name: string;
  body: Buffer;
  /** Refusal reason fragment; absent = allowed. */
  refused?: RegExp;
}

const ROWS: Row[] = [
  // --- allowed ---
  {
    name: 'listed query, repository through variables',
    body: body({ query: REPO_INFO, variables: { owner: 'acme', name: 'widgets' } }),
  },
  {
    name: 'listed query with operationName, any case of owner/name',
    body: body({
      query: REPO_INFO,
      operationName: 'RepositoryInfo',
      variables: { owner: 'ACME', name: 'Widgets' },
    }),
  },
  {
    name: 'literal arguments, aliases of two listed repositories',
    body: body({
      query:
        'query RepositoryInfo { a: repository(owner: "acme", name: "widgets") { id } ' +
        'b: repository(owner: "acme", name: "gadgets") { id } __typename }',
    }),
  },
  {
    name: 'variable default value',
    body: body({
      query: 'query RepositoryInfo($o: String = "acme") { repository(owner: $o, name: "widgets") { id } }',
    }),
  },
  {
    name: 'gh-style $repo variable as the name',
    body: body({
      query:
        'query PullRequestForBranch($owner: String!, $repo: String!, $head: String!) {' +
        ' repository(owner: $owner, name: $repo) { pullRequests(headRefName: $head, first: 1) {' +
        ' nodes { number commits(last: 1) { nodes { commit { author { user { login } } } } } }' +
        ' edges { node { id } } } } }',
      variables: { owner: 'acme', repo: 'widgets', head: 'feature' },
    }),
  },
  {
    name: 'fragments, spread at the root and inside',
    body: body({
      query:
        'query RepositoryInfo { ...Root } fragment Root on Query { repository(owner: "acme", name: "widgets") { ...Repo } } ' +
        'fragment Repo on Repository { name owner { login } }',
    }),
  },
  {
    name: 'inline fragment at the root',
    body: body({
      query: 'query RepositoryInfo { ... on Query { repository(owner: "acme", name: "widgets") { id } } }',
    }),
  },
  {
    name: 'listed mutation',
    body: body({
      query:
        'mutation CreateIssue($input: CreateIssueInput!) { createIssue(input: $input) { issue { number } } }',
      variables: { input: { repositoryId: 'R_1', title: 't' } },
    }),
  },
  {
    name: 'null operationName and variables',
    body: body({
      query: 'query RepositoryInfo { repository(owner: "acme", name: "widgets") { id } }',
      operationName: null,
      variables: null,
    }),
  },
  // --- refused: envelope ---
  { name: 'malformed JSON', body: Buffer.from('{"query": "query RepositoryInfo {'), refused: /not JSON/ },
  { name: 'not UTF-8', body: Buffer.from([0x7b, 0xff, 0x7d]), refused: /not UTF-8/ },
  {
    name: 'batch array',
    body: body([{ query: 'query RepositoryInfo { repository(owner: "acme", name: "widgets") { id } }' }]),
    refused: /batched/,
  },
  { name: 'a JSON string', body: body('query RepositoryInfo { __typename }'), refused: /not a JSON object/ },
  { name: 'no query', body: body({ operationName: 'RepositoryInfo' }), refused: /no query/ },
  {
    name: 'persisted-query extension instead of a query',
    body: body({ extensions: { persistedQuery: { sha256Hash: 'abc' } }, operationName: 'RepositoryInfo' }),
    refused: /unexpected key/,
  },
  {
    name: 'variables as a JSON string',
    body: body({ query: REPO_INFO, variables: '{"owner":"acme","name":"widgets"}' }),
    refused: /variables is not a JSON object/,
  },
  {
    name: 'oversize body',
    body: body({
      query: `query RepositoryInfo { repository(owner: "acme", name: "widgets") { id } } # ${'x'.repeat(GITHUB_GRAPHQL_MAX_BODY_BYTES)}`,
    }),
    refused: /larger than/,
  },
  // --- refused: the document ---
  { name: 'not GraphQL', body: body({ query: 'query RepositoryInfo {' }), refused: /not valid GraphQL/ },
  {
    name: 'unlisted operation',
    body: body({ query: 'query Other { repository(owner: "acme", name: "widgets") { id } }' }),
    refused: /query Other is not in/,
  },
  {
    name: 'listed name but as a mutation',
    body: body({ query: 'mutation RepositoryInfo { deleteRepository(input: {}) { clientMutationId } }' }),
    refused: /mutation RepositoryInfo is not in/,
  },
  {
    name: 'anonymous operation',
    body: body({ query: '{ repository(owner: "acme", name: "widgets") { id } }' }),
    refused: /anonymous/,
  },
  {
    name: 'two operations, the second smuggled',
    body: body({
      query:
        'query RepositoryInfo { repository(owner: "acme", name: "widgets") { id } } ' +
        'query Other { viewer { repositories(first: 100) { nodes { name } } } }',
      operationName: 'RepositoryInfo',
    }),
    refused: /2 operations/,
  },
  {
    name: 'operationName naming another operation than the document',
    body: body({
      query: 'query RepositoryInfo { repository(owner: "acme", name: "widgets") { id } }',
      operationName: 'Other',
    }),
    refused: /"Other" is not the document's operation RepositoryInfo/,
  },
  {
    name: 'subscription',
    body: body({ query: 'subscription RepositoryInfo { __typename }' }),
    refused: /subscription operations/,
  },
  {
    name: 'type-system definition beside the operation',
    body: body({ query: 'query RepositoryInfo { __typename } scalar Evil' }),
    refused: /type-system/,
  },
  // --- refused: repositories ---
  {
    name: 'variables pointing at an unlisted repository',
    body: body({ query: REPO_INFO, variables: { owner: 'acme', name: 'secret' } }),
    refused: /acme\/secret, which is not in/,
  },
  {
    name: 'alias of repository on another repository',
    body: body({
      query:
        'query RepositoryInfo { ok: repository(owner: "acme", name: "widgets") { id } ' +
        'widgets: repository(owner: "acme", name: "secret") { id } }',
    }),
    refused: /acme\/secret/,
  },
  {
    name: 'variable default overridden by an unlisted value',
    body: body({
      query: 'query RepositoryInfo($o: String = "acme") { repository(owner: $o, name: "widgets") { id } }',
      variables: { o: 'evil' },
    }),
    refused: /evil\/widgets/,
  },
  {
    name: 'repository argument through an undefined variable',
    body: body({ query: 'query RepositoryInfo { repository(owner: $o, name: "widgets") { id } }' }),
    refused: /without a string owner and name/,
  },
  {
    name: 'variable given as a number',
    body: body({ query: REPO_INFO, variables: { owner: 'acme', name: 7 } }),
    refused: /without a string owner and name|not a string/,
  },
  {
    name: 'repo variable as owner/name of an unlisted repository',
    body: body({
      query: 'query RepositoryInfo { repository(owner: "acme", name: "widgets") { id } }',
      variables: { repo: 'acme/secret' },
    }),
    refused: /variable repo names acme\/secret/,
  },
  {
    name: 'nested repository(owner, name) on another repository (in a fragment)',
    body: body({
      query:
        'query RepositoryInfo { repository(owner: "acme", name: "widgets") { ...F } } ' +
        'fragment F on Repository { owner { ... on User { repository(name: "secret") { id } } } }',
    }),
    refused: /without a string owner and name/,
  },
  {
    name: 'root field other than repository',
    body: body({ query: 'query RepositoryInfo { rateLimit { remaining } }' }),
    refused: /root field rateLimit/,
  },
  {
    name: 'viewer through a root fragment',
    body: body({ query: 'query RepositoryInfo { ...V } fragment V on Query { viewer { login } }' }),
    refused: /viewer/,
  },
  {
    name: 'root fragment spreading itself',
    body: body({ query: 'query RepositoryInfo { ...V } fragment V on Query { ...V }' }),
    refused: /spread twice|cycle/,
  },
  {
    name: "the owner's other repositories, from a listed one",
    body: body({
      query:
        'query RepositoryInfo { repository(owner: "acme", name: "widgets") { owner { repositories(first: 100) { nodes { name } } } } }',
    }),
    refused: /field repositories/,
  },
  {
    name: 'node(id:) inside a mutation payload',
    body: body({
      query:
        'mutation CreateIssue { createIssue(input: {repositoryId: "R_1", title: "t"}) { issue { node(id: "R_2") { id } } } }',
    }),
    refused: /field node\(…\)/,
  },
  {
    name: 'user(login:) lookup nested under a listed repository',
    body: body({
      query:
        'query RepositoryInfo { repository(owner: "acme", name: "widgets") { owner { login } ' +
        'issues(first: 1) { nodes { author { ... on User { id } } } } ' +
        'mentionableUsers(first: 1) { nodes { user(login: "x") { id } } } } }',
    }),
    refused: /field user\(…\)/,
  },
  {
    name: 'root repository without arguments',
    body: body({ query: 'query RepositoryInfo { repository { id } }' }),
    refused: /needs owner and name/,
  },
];

describe('judgeGithubGraphql(): the table', () => {
  it('has allowed and refused rows', () => {
    expect(ROWS.filter((r) => r.refused === undefined).length).toBeGreaterThanOrEqual(8);
    expect(ROWS.filter((r) => r.refused !== undefined).length).toBeGreaterThanOrEqual(25);
    expect(new Set(ROWS.map((r) => r.name)).size).toBe(ROWS.length);
  });

  it.each(ROWS)('$name', (row) => {
    const verdict = judgeGithubGraphql(row.body, POLICY);
    if (row.refused === undefined) {
      expect(verdict).toMatchObject({ allow: true });
    } else {
      expect(verdict.allow).toBe(false);
      if (!verdict.allow) expect(verdict.reason).toMatch(row.refused);
    }
  });
});

describe('judgeGithubGraphql(): what passes', () => {
  it('sends the judged request re-serialized: printed document, explicit operationName', () => {
    const query =
      'query RepositoryInfo($owner: String!, $name: String!) { # comment\n repository(owner: $owner, name: $name) { id } }';
    const raw = `{"query": ${JSON.stringify(query)}, "variables": {"owner": "acme", "name": "widgets"}}`;
    const verdict = judgeGithubGraphql(Buffer.from(raw), POLICY);
    expect(verdict.allow).toBe(true);
    if (!verdict.allow) return;
    expect(verdict.operation).toBe('query RepositoryInfo');
    expect(verdict.repos).toEqual(['acme/widgets']);
    const sent = JSON.parse(verdict.body.toString()) as Record<string, unknown>;
    expect(sent).toEqual({
      query: print(parse(query)),
      operationName: 'RepositoryInfo',
      variables: { owner: 'acme', name: 'widgets' },
    });
    expect(String(sent.query)).not.toContain('comment');
  });

  it('forwards the last of duplicate JSON keys, which is the one judged', () => {
    const ok = 'query RepositoryInfo { repository(owner: "acme", name: "widgets") { id } }';
    const bad = 'query RepositoryInfo { repository(owner: "acme", name: "secret") { id } }';
    const smuggle = `{"query": ${JSON.stringify(bad)}, "query": ${JSON.stringify(ok)}}`;
    const verdict = judgeGithubGraphql(Buffer.from(smuggle), POLICY);
    expect(verdict.allow).toBe(true);
    if (verdict.allow) expect(verdict.body.toString()).not.toContain('secret');
    const reversed = `{"query": ${JSON.stringify(ok)}, "query": ${JSON.stringify(bad)}}`;
    expect(judgeGithubGraphql(Buffer.from(reversed), POLICY).allow).toBe(false);
  });

  it('refuses everything when no operation is listed, and never throws', () => {
    const none: GithubGraphqlPolicy = { repos: POLICY.repos, operations: new Set() };
    expect(judgeGithubGraphql(ROWS[0]!.body, none).allow).toBe(false);
    const deep = `query RepositoryInfo ${'{ a '.repeat(5000)}${'}'.repeat(5000)}`;
    expect(judgeGithubGraphql(body({ query: deep }), POLICY).allow).toBe(false);
  });
});
