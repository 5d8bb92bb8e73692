import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTestCa,
  startHttpsUpstream,
  type FakeUpstream,
} from '../../../egress/test/helpers/egress-harness.js';
import { CLI, client, leftoversIn, startDaemon, type Daemon } from '../helpers/daemon.js';

const REAL_KEY = `sk-ant-api03-DAEMON-${'7'.repeat(20)}`;
/** A node script in the box: POST "hello" with the placeholder key, print the answer. */
const NODE_FETCH =
  "fetch('https://api.anthropic.com/v1/messages', { method: 'POST', body: 'hello', " +
  "headers: { 'x-api-key': process.env.ANTHROPIC_API_KEY } })" +
  ".then((r) => r.text()).then((t) => console.log('node ' + t), (e) => console.log('node failed', e.cause ?? e))";

// The daemon wires every box to its egress gateway: policy from the create request, secrets from
// the daemon's environment (placeholders in the box), decisions in the store's audit.
describe('agentbox serve: egress per box (real VM)', () => {
  let dataDir: string;
  let daemon: Daemon;
  let upstream: FakeUpstream;
  let api: ReturnType<typeof client>;
  let boxId: string;

  beforeAll(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-egress-'));
    const ca = await createTestCa();
    upstream = await startHttpsUpstream(ca, ['allowed.test', 'api.anthropic.com']);
    upstream.handler = (_req, body, res) => res.end(`ok ${body.length}`);
    const caFile = path.join(dataDir, 'upstream-ca.pem');
    fs.writeFileSync(caFile, ca.certPem);
    daemon = await startDaemon(dataDir, [], {
      AGENTBOX_EGRESS_TEST_UPSTREAMS: '1',
      AGENTBOX_EGRESS_TEST_CA: caFile,
      AGENTBOX_SECRET_ANTHROPIC_API_KEY: REAL_KEY,
    });
    api = client(daemon.url, daemon.initialKey!);
  });

  afterAll(async () => {
    daemon?.process.kill('SIGTERM');
    await daemon?.exited;
    // the daemon leaves VMs for a successor on SIGTERM: remove what the test made
    for (const pid of leftoversIn(dataDir).processes) process.kill(pid, 'SIGKILL');
    await upstream?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('refuses an invalid policy with 400 naming the field', async () => {
    const res = await api('POST', '/v1/boxes', { egress: { allowDomains: ['*'] } });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('invalid_request');
    expect(body.error.message).toMatch(/egress\.allowDomains/);
  });

  it('applies the box policy, injects the key for its host only, and records every decision', async () => {
    const up = `127.0.0.1:${upstream.port}`;
    const created = await api('POST', '/v1/boxes', {
      egress: {
        allowDomains: ['allowed.test', 'api.anthropic.com'],
        upstreams: { 'allowed.test': up, 'api.anthropic.com': up },
      },
    });
    expect(created.status).toBe(201);
    const box = (await created.json()) as { id: string; egress: { allowDomains: string[] } };
    boxId = box.id;
    expect(box.egress.allowDomains).toEqual(['allowed.test', 'api.anthropic.com']);

    const script = [
      // the fake upstreams' CA stands in for the public CAs of tunnelled hosts
      `printf '%s\\n' "$UPSTREAM_CA" >> /etc/ssl/certs/ca-certificates.crt`,
      "curl -s -o /dev/null -w 'allowed=%{http_code}\\n' https://allowed.test/",
      "curl -s -o /dev/null -D - https://denied.test/ | tr -d '\\r' | grep -i '^x-agentbox-deny' || echo none",
      'curl -s -H "x-api-key: $ANTHROPIC_API_KEY" -d hello https://api.anthropic.com/v1/messages; echo',
      // node's own fetch takes the same way out (NODE_USE_ENV_PROXY), and trusts the box CA.
      `node -e "${NODE_FETCH}"`,
      'echo "placeholder=$ANTHROPIC_API_KEY"',
    ].join('\n');
    const res = await api('POST', `/v1/boxes/${boxId}/exec?stream=false`, {
      command: script,
      env: { UPSTREAM_CA: fs.readFileSync(path.join(dataDir, 'upstream-ca.pem'), 'utf8') },
    });
    expect(res.status).toBe(200);
    const result = (await res.json()) as { exitCode: number; stdout: string };
    const out = Buffer.from(result.stdout, 'base64').toString();
    expect(out).toMatch(/^allowed=200$/m);
    expect(out).toMatch(/^x-agentbox-deny: domain_not_allowed$/im);
    expect(out).toMatch(/^ok 5$/m);
    expect(out).toMatch(/^node ok 5$/m);
    expect(out).toMatch(/^placeholder=agentbox-ph-[0-9a-f]+$/m);
    expect(out).not.toContain(REAL_KEY);
    const anthropic = upstream.seen.find((s) => s.headers.host === 'api.anthropic.com');
    expect(anthropic?.headers['x-api-key']).toBe(REAL_KEY);

    const auditRes = await api('GET', `/v1/boxes/${boxId}/egress`);
    expect(auditRes.status).toBe(200);
    const { records } = (await auditRes.json()) as {
      records: { host: string; decision: string; code: string }[];
    };
    expect(records.map((r) => `${r.host} ${r.decision} ${r.code}`)).toEqual(
      expect.arrayContaining([
        'allowed.test allow allowed',
        'denied.test deny domain_not_allowed',
        'api.anthropic.com allow allowed',
      ]),
    );
    expect(JSON.stringify(records)).not.toContain(REAL_KEY);

    const cli = execFileSync(process.execPath, [CLI, 'audit', boxId, '--data', dataDir], {
      encoding: 'utf8',
    });
    expect(cli).toMatch(/DENY\s+domain_not_allowed\s+denied\.test:443/);
    expect(cli).toMatch(/ALLOW\s+allowed\s+allowed\.test:443/);
    expect(cli).not.toContain(REAL_KEY);
  });

  it('a credential given as a box env var stays on the host: the box sees a placeholder', async () => {
    const boxKey = `sk-ant-api03-BOXENV-${'5'.repeat(20)}`;
    const up = `127.0.0.1:${upstream.port}`;
    const created = await api('POST', '/v1/boxes', {
      env: { ANTHROPIC_API_KEY: boxKey, PLAIN_VAR: 'plain value' },
      egress: { allowDomains: ['api.anthropic.com'], upstreams: { 'api.anthropic.com': up } },
    });
    expect(created.status).toBe(201);
    const second = (await created.json()) as { id: string };
    upstream.seen.length = 0;
    const res = await api('POST', `/v1/boxes/${second.id}/exec?stream=false`, {
      command:
        'echo "key=$ANTHROPIC_API_KEY plain=$PLAIN_VAR"; curl -s -H "x-api-key: $ANTHROPIC_API_KEY" https://api.anthropic.com/v1/messages; echo; ' +
        'cat /run/agentbox/env.json; echo; cat /proc/[0-9]*/environ | tr "\\0" "\\n" | grep -c BOXENV',
    });
    const out = Buffer.from(((await res.json()) as { stdout: string }).stdout, 'base64').toString();
    expect(out).toMatch(/^key=agentbox-ph-[0-9a-f]+ plain=plain value$/m);
    expect(out).toContain('{"PLAIN_VAR":"plain value"}');
    expect(out).not.toContain(boxKey);
    expect(out.trim().split('\n').at(-1)).toBe('0');
    expect(upstream.seen[0]?.headers['x-api-key']).toBe(boxKey);
    expect((await api('DELETE', `/v1/boxes/${second.id}`)).status).toBe(200);
  });

  it("revoking a key cuts its box's egress within the key check, while the box stays", async () => {
    const made = execFileSync(
      process.execPath,
      [CLI, 'keys', 'create', '--name', 'tenant', '--scope', 'admin', '--data', dataDir, '--json'],
      { encoding: 'utf8' },
    );
    const tenant = JSON.parse(made) as { id: string; key: string };
    const asTenant = client(daemon.url, tenant.key);
    const up = `127.0.0.1:${upstream.port}`;
    const created = await asTenant('POST', '/v1/boxes', {
      egress: { allowDomains: ['allowed.test'], upstreams: { 'allowed.test': up } },
    });
    expect(created.status).toBe(201);
    const box = (await created.json()) as { id: string };
    const curl = async (key: typeof api, loop: string) => {
      const res = await key('POST', `/v1/boxes/${box.id}/exec?stream=false`, {
        command: loop,
        env: { UPSTREAM_CA: fs.readFileSync(path.join(dataDir, 'upstream-ca.pem'), 'utf8') },
      });
      expect(res.status).toBe(200);
      return Buffer.from(((await res.json()) as { stdout: string }).stdout, 'base64').toString();
    };
    const status = "curl -s -o /dev/null -w '%{http_code}' https://allowed.test/";
    const before = await curl(
      asTenant,
      `printf '%s\n' "$UPSTREAM_CA" >> /etc/ssl/certs/ca-certificates.crt; ${status}`,
    );
    expect(before).toBe('200');

    execFileSync(process.execPath, [CLI, 'keys', 'revoke', tenant.id, '--data', dataDir]);
    // Another process revoked it: the daemon's key check (5 s) cuts the box's egress.
    const after = await curl(
      api,
      `for i in $(seq 40); do c=$(${status}); [ "$c" = 200 ] || break; sleep 0.5; done; echo "$c"; ` +
        "curl -s -o /dev/null -D - https://allowed.test/ | tr -d '\\r' | grep -i '^x-agentbox-deny'",
    );
    // The tunnel is refused (curl's code 000: its CONNECT got the gateway's 403), naming why.
    expect(after).toMatch(/^000\nx-agentbox-deny: domain_not_allowed$/im);
    const still = await api('GET', `/v1/boxes/${box.id}`);
    expect(((await still.json()) as { state: string }).state).toBe('running');
    expect((await api('DELETE', `/v1/boxes/${box.id}`)).status).toBe(200);
  });

  it('deleting the box leaves nothing behind', async () => {
    const res = await api('DELETE', `/v1/boxes/${boxId}`);
    expect(res.status).toBe(200);
    expect(leftoversIn(dataDir, { exceptStandby: true })).toEqual({ processes: [], dirs: [] });
  });
});
