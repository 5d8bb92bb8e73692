import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlaceholderSpotter, ReplaceTransform } from '../../src/body-scan.js';
import { injectHeaders, PlaceholderRegistry, scrubHeaders, scrubText } from '../../src/placeholders.js';
import { compilePolicy, DEFAULT_INJECTION_RULES, rulesForHost, SecretStore } from '../../src/index.js';

describe('SecretStore', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'egress-secrets-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('reads AGENTBOX_SECRET_<NAME> variables and ignores the rest', () => {
    const store = SecretStore.fromEnv({
      AGENTBOX_SECRET_ANTHROPIC_API_KEY: 'sk-1',
      AGENTBOX_SECRET_EMPTY: '',
      ANTHROPIC_API_KEY: 'not-this',
      PATH: '/bin',
    });
    expect(store.names()).toEqual(['ANTHROPIC_API_KEY']);
    expect(store.reveal('ANTHROPIC_API_KEY')).toBe('sk-1');
  });

  it('reads a 0600 JSON file and refuses one others can read', async () => {
    const file = path.join(dir, 'secrets.json');
    await writeFile(file, JSON.stringify({ OPENAI_API_KEY: 'sk-2' }));
    await chmod(file, 0o644);
    await expect(SecretStore.fromFile(file)).rejects.toThrow(/chmod 600/);
    await chmod(file, 0o600);
    expect((await SecretStore.fromFile(file)).reveal('OPENAI_API_KEY')).toBe('sk-2');
  });

  it('does not quote a broken file back in its error', async () => {
    const file = path.join(dir, 'broken.json');
    await writeFile(file, '{"A": "sk-leaky-value"', { mode: 0o600 });
    const err = await SecretStore.fromFile(file).then(
      () => new Error('unexpectedly parsed'),
      (e: Error) => e,
    );
    expect(err.message).not.toContain('sk-leaky-value');
    expect(err.message).toMatch(/not valid JSON/);
  });

  it('validates names and values, and never shows values', () => {
    const store = new SecretStore();
    expect(() => store.set('lower', 'x')).toThrow(/UPPER_SNAKE_CASE/);
    expect(() => store.set('A', 'two\nlines')).toThrow(/line break/);
    store.set('GITHUB_TOKEN', 'ghp_topsecret');
    expect(JSON.stringify(store)).toBe('{"secrets":["GITHUB_TOKEN"]}');
    expect(inspect(store)).not.toContain('ghp_topsecret');
    const changed: string[] = [];
    const off = store.onChange((name) => changed.push(name));
    store.set('GITHUB_TOKEN', 'ghp_rotated');
    off();
    store.delete('GITHUB_TOKEN');
    expect(changed).toEqual(['GITHUB_TOKEN']);
  });
});

describe('injectHeaders', () => {
  const store = new SecretStore();
  store.set('ANTHROPIC_API_KEY', 'REAL-A');
  store.set('GITHUB_TOKEN', 'REAL-G');
  const registry = new PlaceholderRegistry(store);
  const a = registry.issue('ANTHROPIC_API_KEY');
  const g = registry.issue('GITHUB_TOKEN');
  const policy = compilePolicy({}, { rules: DEFAULT_INJECTION_RULES });

  it('swaps a placeholder in the user part of Basic credentials too', () => {
    const basic = `Basic ${Buffer.from(`${g}:x-oauth-basic`).toString('base64')}`;
    const out = injectHeaders({ authorization: basic }, rulesForHost(policy, 'github.com'), registry);
    expect(Buffer.from(String(out.headers.authorization).slice(6), 'base64').toString()).toBe(
      'REAL-G:x-oauth-basic',
    );
    expect(out.leak).toBe(false);
  });

  it('flags a second placeholder riding along in the swapped header', () => {
    const basic = `Basic ${Buffer.from(`${a}:${g}`).toString('base64')}`;
    const out = injectHeaders({ authorization: basic }, rulesForHost(policy, 'github.com'), registry);
    expect(out.injected).toEqual(['GITHUB_TOKEN']);
    expect(out.leak).toBe(true);
  });

  it('does not swap a placeholder embedded in a longer x-api-key value', () => {
    const out = injectHeaders(
      { 'x-api-key': `prefix-${a}` },
      rulesForHost(policy, 'api.anthropic.com'),
      registry,
    );
    expect(out.headers['x-api-key']).toBe(`prefix-${a}`);
    expect(out.leak).toBe(true);
  });

  it('forgets placeholders when cleared (box closed)', () => {
    const local = new PlaceholderRegistry(store);
    const p = local.issue('ANTHROPIC_API_KEY');
    local.clear();
    expect(local.realValue(p)).toBeUndefined();
  });
});

async function run(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

describe('ReplaceTransform and PlaceholderSpotter', () => {
  it('replaces values split across every possible chunk boundary', async () => {
    const text = 'aa SECRET-VALUE bb SECRET-VALUE cc SECRET';
    let checked = 0;
    for (let cut = 0; cut <= text.length; cut++) {
      const chunks = [Buffer.from(text.slice(0, cut)), Buffer.from(text.slice(cut))];
      const out = await run(Readable.from(chunks).pipe(new ReplaceTransform([['SECRET-VALUE', 'ph']])));
      expect(out).toBe('aa ph bb ph cc SECRET');
      checked++;
    }
    expect(checked).toBe(text.length + 1);
  });

  it('does not hold back a chunk that cannot start a match (streams stay live)', () => {
    const t = new ReplaceTransform([['SECRET', 'x']]);
    const seen: string[] = [];
    t.on('data', (c: Buffer) => seen.push(c.toString()));
    t.write(Buffer.from('data: {"a":1}\n\n'));
    expect(seen).toEqual(['data: {"a":1}\n\n']);
    t.write(Buffer.from('tail SEC'));
    expect(seen.at(-1)).toBe('tail ');
    t.end();
  });

  it('spots a placeholder prefix split across chunks', () => {
    const s = new PlaceholderSpotter();
    s.push(Buffer.from('xx agentbox-'));
    expect(s.found).toBe(false);
    s.push(Buffer.from('ph-0123'));
    expect(s.found).toBe(true);
  });
});

describe('scrubText / scrubHeaders', () => {
  const scrub = [
    ['sk-REAL-1', 'agentbox-ph-a'],
    ['', 'never-inserted'],
  ] as const;

  it('replace every real value, and ignore an empty one', () => {
    expect(scrubText('a sk-REAL-1 b sk-REAL-1', scrub)).toBe('a agentbox-ph-a b agentbox-ph-a');
    expect(scrubText('plain', scrub)).toBe('plain');
  });

  it('scrub string and list header values, keep numbers, drop undefined', () => {
    expect(
      scrubHeaders(
        {
          'x-echo': 'Bearer sk-REAL-1',
          'set-cookie': ['t=sk-REAL-1', 'u=1'],
          'content-length': 12,
          gone: undefined,
        },
        scrub,
      ),
    ).toEqual({
      'x-echo': 'Bearer agentbox-ph-a',
      'set-cookie': ['t=agentbox-ph-a', 'u=1'],
      'content-length': 12,
    });
  });
});
