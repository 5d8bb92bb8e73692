import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createEgressGateway,
  MemoryAuditSink,
  SecretStore,
  type EgressBox,
  type EgressGateway,
} from '@agentbox/egress';
import type { Vm } from '@agentbox/vm';
import { attachEgress } from '../../src/services/box-egress.js';
import {
  createTestCa,
  startHttpUpstream,
  startHttpsUpstream,
  type FakeUpstream,
} from '../../../egress/test/helpers/egress-harness.js';
import { bootBox, destroyAll, run } from '../../../../test/helpers.js';

// The egress promise, end to end: a real VM (no NIC) whose clients reach fake upstreams on this
// host only through the in-box proxy, the VM channel and the real gateway (policy, DNS pinning,
// TLS interception, placeholder → key swap). Every case below is a client inside the box.

const REAL_KEY = `sk-ant-api03-REAL-${'9'.repeat(24)}-never-in-the-guest`;
const HTTPS_HOSTS = [
  'allowed.test',
  'x.wild.test',
  'blocked.wild.test',
  'api.anthropic.com',
  'github.com',
  'api.github.com',
  'plain-upstream.test',
];

/** A host address of this machine that is not loopback (the "host itself" a box must not reach). */
function hostAddress(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const addr of list ?? []) if (!addr.internal && addr.family === 'IPv4') return addr.address;
  }
  return undefined;
}

interface CurlResult {
  code: string;
  deny: string;
  exit: string;
  body: string;
}

describe('real VM: egress through the gateway (adversarial)', () => {
  let vm: Vm;
  let gateway: EgressGateway;
  let box: EgressBox;
  let https: FakeUpstream;
  let http: FakeUpstream;
  const audit = new MemoryAuditSink();

  beforeAll(async () => {
    const ca = await createTestCa();
    [https, http] = await Promise.all([startHttpsUpstream(ca, HTTPS_HOSTS), startHttpUpstream()]);
    const secrets = new SecretStore();
    secrets.set('ANTHROPIC_API_KEY', REAL_KEY);
    const up = `127.0.0.1:${https.port}`;
    gateway = createEgressGateway({
      secrets,
      audit,
      allowUpstreamMap: true,
      upstreamCaPem: ca.certPem,
      // The box's DNS is the host's: names tests use to rebind to forbidden addresses.
      lookup: async (name) => {
        const table: Record<string, string> = {
          'rebind.test': '127.0.0.1',
          'private.test': '10.0.0.1',
          'meta.test': '169.254.169.254',
          'cgnat.test': '100.64.0.1',
          'v6local.test': '::1',
          'mapped.test': '::ffff:127.0.0.1',
        };
        const address = table[name];
        if (!address) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
        return [{ address, family: address.includes(':') ? 6 : 4 }];
      },
    });
    box = await gateway.openBox({
      boxId: 'e2e-egress',
      policy: {
        allowDomains: [
          'allowed.test',
          '*.wild.test',
          'plain.test',
          'rebind.test',
          'private.test',
          'meta.test',
          'cgnat.test',
          'v6local.test',
          'mapped.test',
          'api.anthropic.com',
          'metadata.google.internal',
          'github.com',
          'api.github.com',
        ],
        denyDomains: ['blocked.wild.test'],
        repos: ['agentbox/allowed'],
        upstreams: {
          'allowed.test': up,
          'x.wild.test': up,
          'blocked.wild.test': up,
          'api.anthropic.com': up,
          'github.com': up,
          'api.github.com': up,
          'plain.test': `127.0.0.1:${http.port}`,
        },
      },
    });
    vm = await bootBox();
    await attachEgress(vm.guest, box);
    // The fake upstreams' CA plays the public CAs a real box trusts for tunnelled (not intercepted) hosts.
    await vm.guest.writeFile('/tmp/upstream-ca.pem', Buffer.from(ca.certPem));
    await run(vm, '{ echo; cat /tmp/upstream-ca.pem; echo; } >> /etc/ssl/certs/ca-certificates.crt');
  });

  afterAll(async () => {
    await destroyAll();
    await gateway?.close();
    await Promise.all([https?.close(), http?.close()]);
  });

  /** Runs many curl cases in one exec (each exec costs a process start under emulation). */
  async function curls(cases: Record<string, string>): Promise<Record<string, CurlResult>> {
    const script = Object.entries(cases)
      .map(
        ([name, args]) =>
          `out=$(curl -sS --max-time 20 -o /tmp/body -D /tmp/head -w '%{http_code}/%{http_connect}' ${args} 2>/dev/null); ` +
          `e=$?; d=$(grep -i '^x-agentbox-deny:' /tmp/head | tail -1 | tr -d '\\r' | cut -d' ' -f2); ` +
          `b=$(head -c 200 /tmp/body 2>/dev/null | tr -d '\\n\\r' | base64 -w0); rm -f /tmp/body /tmp/head; ` +
          `echo "${name}|$out|$d|$e|$b"`,
      )
      .join('\n');
    const r = await run(vm, script);
    const results: Record<string, CurlResult> = {};
    for (const line of r.stdout.toString().trim().split('\n')) {
      const [name, out, deny, exit, body] = line.split('|');
      const [code, connect] = (out ?? '').split('/');
      results[name!] = {
        code: code === '000' ? (connect ?? '000') : code!,
        deny: deny ?? '',
        exit: exit ?? '',
        body: Buffer.from(body ?? '', 'base64').toString(),
      };
    }
    return results;
  }

  it('lets allowed destinations through, over HTTPS (tunnelled or intercepted) and plain HTTP', async () => {
    const r = await curls({
      https: 'https://allowed.test/hello',
      wildcard: 'https://x.wild.test/',
      uppercase: 'https://ALLOWED.TEST/',
      trailingDot: 'https://allowed.test./',
      plain: 'http://plain.test/plain',
      anthropic: 'https://api.anthropic.com/v1/models',
      githubAllowedRepo: "'https://github.com/agentbox/allowed.git/info/refs?service=git-upload-pack'",
      githubApiAllowedRepo: 'https://api.github.com/repos/agentbox/allowed/pulls',
    });
    for (const [name, result] of Object.entries(r))
      expect({ name, code: result.code, exit: result.exit }).toEqual({ name, code: '200', exit: '0' });
  });

  it('denies everything else with the right X-Agentbox-Deny code', async () => {
    const own = hostAddress();
    const cases: Record<string, [string, string]> = {
      unlistedHttps: ['https://denied.test/', 'domain_not_allowed'],
      unlistedHttp: ['http://denied.test/', 'domain_not_allowed'],
      deniedWins: ['https://blocked.wild.test/', 'domain_denied'],
      bareSuffix: ['https://wild.test/', 'domain_not_allowed'],
      lookalike: ['https://allowed.test.evil.test/', 'domain_not_allowed'],
      prefixTrick: ['https://evilallowed.test/', 'domain_not_allowed'],
      ipLiteralHttps: ['https://1.1.1.1/', 'ip_literal_not_allowed'],
      ipLiteralHttp: ['http://8.8.8.8/', 'ip_literal_not_allowed'],
      rfc1918: ['http://10.0.0.1/', 'ip_literal_not_allowed'],
      rfc1918b: ['https://192.168.1.1/', 'ip_literal_not_allowed'],
      metadataIp: ['http://169.254.169.254/latest/meta-data/', 'ip_literal_not_allowed'],
      metadataName: ['http://metadata.google.internal/computeMetadata/v1/', 'address_not_allowed'],
      loopbackLiteral: ["--noproxy '' http://127.0.0.1:9/", 'ip_literal_not_allowed'],
      loopbackV6: ["--noproxy '' 'http://[::1]:9/'", 'ip_literal_not_allowed'],
      localhostName: ["--noproxy '' http://localhost:9/", 'address_not_allowed'],
      rebindToLoopback: ['https://rebind.test/', 'address_not_allowed'],
      rebindToPrivate: ['https://private.test/', 'address_not_allowed'],
      rebindToMetadata: ['http://meta.test/', 'address_not_allowed'],
      rebindToCgnat: ['https://cgnat.test/', 'address_not_allowed'],
      rebindToV6Loopback: ['https://v6local.test/', 'address_not_allowed'],
      rebindToMappedV4: ['https://mapped.test/', 'address_not_allowed'],
      decimalIp: ["--noproxy '' http://2130706433/", 'ip_literal_not_allowed'],
      otherPort: ['https://allowed.test:8443/', 'port_not_allowed'],
      sshPort: ['https://allowed.test:22/', 'port_not_allowed'],
      userinfoTrick: ['http://allowed.test@denied.test/', 'domain_not_allowed'],
      githubOtherRepo: [
        "'https://github.com/someone/else.git/info/refs?service=git-upload-pack'",
        'github_repo_not_allowed',
      ],
      githubPush: ["'https://github.com/someone/else.git/git-receive-pack'", 'github_repo_not_allowed'],
      githubApiOtherRepo: ['https://api.github.com/repos/someone/else', 'github_repo_not_allowed'],
      githubApiUser: ['https://api.github.com/user', 'github_repo_not_allowed'],
      githubWebPage: ['https://github.com/settings/tokens', 'github_repo_not_allowed'],
      hostHeaderMismatch: ["-H 'Host: evil.test' https://api.anthropic.com/v1/messages", 'sni_mismatch'],
      ...(own ? { hostOwnAddress: [`http://${own}/`, 'ip_literal_not_allowed'] as [string, string] } : {}),
    };
    const r = await curls(Object.fromEntries(Object.entries(cases).map(([k, [args]]) => [k, args])));
    for (const [name, [, code]] of Object.entries(cases)) {
      expect(`${name} ${r[name]!.code} ${r[name]!.deny}`).toBe(`${name} 403 ${code}`);
    }
    // each denial was audited with its code
    const audited = new Set(audit.records.filter((a) => a.decision === 'deny').map((a) => a.code));
    for (const [, code] of Object.values(cases)) expect(audited.has(code as never)).toBe(true);
  });

  it('has no way out but the proxy: no route, no DNS, no raw sockets', async () => {
    const r = await run(
      vm,
      [
        "curl -sS --noproxy '*' --max-time 5 http://1.1.1.1/ >/dev/null 2>&1; echo direct=$?",
        'getent hosts example.com >/dev/null; echo dns=$?',
        `python3 -c 'import socket\ntry:\n  socket.create_connection(("93.184.216.34", 443), timeout=3); print("udp-tcp=open")\nexcept OSError as e: print("tcp=refused")'`,
        `python3 -c 'import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n  s.sendto(b"x", ("8.8.8.8", 53)); print("udp=sent")\nexcept OSError as e: print("udp=refused")'`,
        "bash -c 'exec 3<>/dev/tcp/10.0.0.1/80' 2>/dev/null; echo devtcp=$?",
      ].join('\n'),
    );
    expect(r.stdout.toString().trim().split('\n')).toEqual([
      'direct=7',
      'dns=2',
      'tcp=refused',
      'udp=refused',
      'devtcp=1',
    ]);
  });

  it('answers a malformed proxy request with 400, and keeps serving', async () => {
    const r = await run(
      vm,
      "bash -c 'exec 3<>/dev/tcp/127.0.0.1/3128; printf \"GARBAGE\\r\\n\\r\\n\" >&3; head -c 12 <&3'; echo; curl -s -o /dev/null -w '%{http_code}' https://allowed.test/",
    );
    const [first, after] = r.stdout.toString().trim().split('\n');
    expect(first).toBe('HTTP/1.1 400');
    expect(after).toBe('200');
  });

  it('holds a flood of connections to the channel cap: the rest are cut, nothing leaks, the box keeps working', async () => {
    // Code in the box opens 300 proxy connections at once; each is a channel the guest opens to the
    // host, which takes MAX_GUEST_CHANNELS (256) and resets the others. Closed, they free their
    // places: a second flood (smaller: closing 256 takes a while here) gets through whole, and an
    // ordinary request still works.
    const flood = [
      'import socket, sys',
      'n = int(sys.argv[1])',
      'socks = []',
      'for i in range(n):',
      '    s = socket.create_connection(("127.0.0.1", 3128), timeout=60)',
      '    s.sendall(b"CONNECT allowed.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n")',
      '    socks.append(s)',
      'ok = cut = 0',
      'for s in socks:',
      '    try:',
      '        d = s.recv(64)',
      '    except OSError:',
      '        d = b""',
      '    if d.startswith(b"HTTP/1.1 200"): ok += 1',
      '    elif not d: cut += 1',
      'print(f"ok={ok} cut={cut}")',
      'for s in socks: s.close()',
    ].join('\n');
    await vm.guest.writeFile('/tmp/flood.py', Buffer.from(flood));
    const r = await run(
      vm,
      "python3 /tmp/flood.py 300; sleep 1; python3 /tmp/flood.py 200; curl -s -o /dev/null -w '%{http_code}' https://allowed.test/",
    );
    expect(r.stdout.toString().trim().split('\n')).toEqual(['ok=256 cut=44', 'ok=200 cut=0', '200']);
  });

  it('swaps the placeholder for the real key only towards its host, and the key never enters the guest', async () => {
    https.seen.length = 0;
    // Upstreams echo bodies only: what the guest can see back must not contain the key.
    https.handler = (req, body, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`host=${req.headers.host} body=${body.toString()}`);
    };
    const env = await run(vm, 'echo "$ANTHROPIC_API_KEY"');
    const placeholder = env.stdout.toString().trim();
    expect(placeholder).toMatch(/^agentbox-ph-/);
    const r = await curls({
      toRuleHost: `-H "x-api-key: $ANTHROPIC_API_KEY" -d "{\\"k\\":\\"$ANTHROPIC_API_KEY\\"}" https://api.anthropic.com/v1/messages`,
      toOtherHost: `-H "x-api-key: $ANTHROPIC_API_KEY" https://allowed.test/steal`,
      bearerToRuleHost: `-H "Authorization: Bearer $ANTHROPIC_API_KEY" https://api.anthropic.com/v1/other`,
      plainHttp: `-H "x-api-key: $ANTHROPIC_API_KEY" http://plain.test/steal`,
    });
    expect(r.toRuleHost!.code).toBe('200');
    // the body's placeholder is not swapped; the echo the guest sees holds the placeholder, not the key
    expect(r.toRuleHost!.body).toContain(placeholder);
    const anthropic = https.seen.filter((s) => s.headers.host === 'api.anthropic.com');
    expect(anthropic[0]!.headers['x-api-key']).toBe(REAL_KEY);
    expect(anthropic[0]!.body).toContain(placeholder);
    // another header at the rule host is not a place the key may go
    expect(anthropic[1]!.headers.authorization).toBe(`Bearer ${placeholder}`);
    const other = https.seen.find((s) => s.headers.host === 'allowed.test');
    expect(other?.headers['x-api-key']).toBe(placeholder);
    expect(http.seen.at(-1)?.headers['x-api-key']).toBe(placeholder);
    expect(audit.records.some((a) => a.placeholderLeak)).toBe(true);

    // Search the guest: every process's environment and command line, and every writable tree.
    const dump = await run(
      vm,
      'cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; tar -cf - --exclude=/proc --exclude=/sys --exclude=/dev /etc /root /run /tmp /var /usr/local /workspace 2>/dev/null',
    );
    expect(dump.stdout.length).toBeGreaterThan(10_000);
    expect(dump.stdout.includes(REAL_KEY)).toBe(false);
    expect(dump.stdout.includes('sk-ant-api03-REAL')).toBe(false);
    expect(JSON.stringify(audit.records).includes(REAL_KEY)).toBe(false);
  });
});
