/**
 * Not a CI test: runs the real agent CLIs the way the runners build them, through a real egress
 * gateway session, against the scripted fake APIs, and checks what comes out. Use it when a
 * pinned CLI version changes (see the package README, "Verification"):
 *
 *   mkdir -p /tmp/clis && cd /tmp/clis && npm i @anthropic-ai/claude-code@… @openai/codex@… opencode-ai@…
 *   npx esbuild packages/runners/test/verify/real-clis.ts --bundle --platform=node --format=esm \
 *     --conditions=source --outfile=/tmp/verify-clis.mjs \
 *     --banner:js="import { createRequire } from 'module'; const require = createRequire(import.meta.url);"
 *   AGENTBOX_CLI_BIN=/tmp/clis/node_modules/.bin node /tmp/verify-clis.mjs [claude,codex,opencode]
 *
 * Each scenario's stdout, events, outcome and requests land in $AGENTBOX_VERIFY_OUT (default
 * $TMPDIR/agentbox-verify-clis/<agent>-<scenario>/), ready to become fixtures after scrubbing paths.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TaskSpecSchema, type TaskSpecInput } from '@agentbox/protocol';
import { createTestCa, startHarness } from '../../../egress/test/helpers/egress-harness.js';
import {
  messagesText,
  startFakeAnthropic,
  systemText,
  text,
  toolUse,
  type AnthropicTurn,
} from '../../../../test/fake-apis/anthropic.js';
import {
  inputText,
  message,
  startFakeResponses,
  type ResponsesTurn,
} from '../../../../test/fake-apis/openai-responses.js';
import {
  runnerFor,
  type AgentOutcome,
  type ResolvedLibraryItem,
  type RunnerContext,
  type TaskEventDraft,
} from '../../src/index.js';

const REAL_ANTHROPIC = `sk-ant-verify-${'a'.repeat(24)}`;
const REAL_OPENAI = `sk-proj-verify-${'b'.repeat(24)}`;
const OUT = process.env.AGENTBOX_VERIFY_OUT ?? path.join(os.tmpdir(), 'agentbox-verify-clis');

interface Scenario {
  spec: TaskSpecInput;
  ctx?: Partial<RunnerContext>;
  library?: ResolvedLibraryItem[];
  anthropic?: AnthropicTurn[];
  openai?: ResponsesTurn[];
}

async function run(name: string, scenario: Scenario) {
  const dir = path.join(OUT, name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const spec = TaskSpecSchema.parse(scenario.spec);
  const ctx: RunnerContext = { cwd: path.join(dir, 'work'), home: path.join(dir, 'home'), ...scenario.ctx };
  fs.mkdirSync(ctx.cwd, { recursive: true });
  fs.mkdirSync(ctx.home, { recursive: true });

  const ca = await createTestCa();
  const [a, o] = await Promise.all([ca.issue('api.anthropic.com'), ca.issue('api.openai.com')]);
  const anthropic = await startFakeAnthropic({
    script: scenario.anthropic ?? [],
    tls: { key: a.keyPem, cert: a.certPem },
  });
  const openai = await startFakeResponses({
    script: scenario.openai ?? [],
    tls: { key: o.keyPem, cert: o.certPem },
  });
  const harness = await startHarness({
    policy: {
      allowDomains: ['api.anthropic.com', 'api.openai.com'],
      upstreams: {
        'api.anthropic.com': `127.0.0.1:${anthropic.port}`,
        'api.openai.com': `127.0.0.1:${openai.port}`,
      },
    },
    secrets: { ANTHROPIC_API_KEY: REAL_ANTHROPIC, OPENAI_API_KEY: REAL_OPENAI },
    upstreamCaPem: ca.certPem,
  });
  const caFile = path.join(dir, 'box-ca.pem');
  fs.writeFileSync(caFile, harness.box.caCertPem);

  const runner = runnerFor(spec.agent);
  const cmd = runner.command(spec, ctx);
  for (const file of [...runner.materialize(scenario.library ?? [], ctx), ...cmd.files]) {
    fs.mkdirSync(path.dirname(file.path), { recursive: true });
    fs.writeFileSync(file.path, file.content, { mode: file.mode ?? 0o644 });
  }
  const proxy = `http://127.0.0.1:${harness.proxyPort}`;
  const bin = process.env.AGENTBOX_CLI_BIN;
  const env = {
    PATH: bin === undefined ? (process.env.PATH ?? '') : `${bin}:${process.env.PATH ?? ''}`,
    HOME: ctx.home,
    LANG: 'C.UTF-8',
    HTTPS_PROXY: proxy,
    HTTP_PROXY: proxy,
    NO_PROXY: 'localhost,127.0.0.1',
    NODE_EXTRA_CA_CERTS: caFile,
    SSL_CERT_FILE: caFile,
    CLAUDE_CODE_MAX_RETRIES: '0',
    ...harness.box.env,
    ...cmd.env,
  };
  const child = spawn(cmd.argv[0]!, cmd.argv.slice(1), {
    cwd: cmd.cwd,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdin.end(cmd.stdin ?? '');
  const parser = runner.parser();
  const events: TaskEventDraft[] = [];
  let stdout = '';
  let stderr = '';
  let pending = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    pending += chunk.toString();
    for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
      events.push(...parser.line(pending.slice(0, i)));
      pending = pending.slice(i + 1);
    }
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, 180_000);
  const [exitCode, signal] = await new Promise<[number | null, string | null]>((resolve) =>
    child.on('close', (code, sig) => resolve([code, sig])),
  );
  clearTimeout(timer);
  if (pending !== '') events.push(...parser.line(pending));
  events.push(...parser.end({ exitCode, signal, timedOut, stderrTail: stderr.slice(-4096) }));
  const outcome: AgentOutcome = parser.outcome();
  const write = (file: string, value: unknown) =>
    fs.writeFileSync(
      path.join(dir, file),
      typeof value === 'string' ? value : JSON.stringify(value, null, 1),
    );
  write('stdout.jsonl', stdout);
  write('stderr.txt', stderr);
  write('events.json', events);
  write('outcome.json', outcome);
  write('requests.json', [...anthropic.requests, ...openai.requests]);
  write('audit.json', harness.audit.records);
  await harness.close();
  await Promise.all([anthropic.close(), openai.close()]);
  return {
    ctx,
    events,
    outcome,
    anthropic,
    openai,
    placeholders: harness.box.env,
    audit: harness.audit.records,
  };
}

let failures = 0;
function check(name: string, ok: boolean, detail: unknown = '') {
  if (!ok) failures++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${ok ? '' : ` ${JSON.stringify(detail).slice(0, 600)}`}`);
}
const kinds = (events: TaskEventDraft[]) => events.map((e) => e.type).filter((t) => t !== 'status');
const TWO_TURN = ['text', 'tool_use', 'tool_result', 'tool_use', 'tool_result', 'text', 'completion'];
const item = (
  kind: ResolvedLibraryItem['kind'],
  name: string,
  files: Record<string, string>,
): ResolvedLibraryItem => ({
  kind,
  namespace: '_global',
  name,
  sha256: 'verify',
  files,
});
const SKILL = item('skill', 'greeter', {
  'SKILL.md': '---\nname: greeter\ndescription: Greets the GREETSKILL way\n---\nSay hi.\n',
});
const RULES = item('rules', 'style', { 'RULES.md': 'Always write RULEMARKER tests.' });
const PERSONA = {
  name: 'reviewer',
  description: 'Reviews code',
  systemPrompt: 'You are REVIEWER-PERSONA.',
  disallowedTools: ['Bash'],
};

async function claude() {
  const work = path.join(OUT, 'claude-two-turn', 'work');
  const basic = await run('claude-two-turn', {
    spec: { agent: 'claude', prompt: 'Create hello.txt, then show it.', effort: 'high' },
    anthropic: [
      {
        content: [
          text('I will create the file.'),
          toolUse('Write', { file_path: path.join(work, 'hello.txt'), content: 'hello\n' }),
        ],
      },
      { content: [toolUse('Bash', { command: 'cat hello.txt && echo bash-ran' })] },
      { content: [text('Done.')] },
    ],
  });
  const msgs = basic.anthropic.messages();
  check(
    'claude: two-turn events',
    JSON.stringify(kinds(basic.events)) === JSON.stringify(TWO_TURN),
    kinds(basic.events),
  );
  check(
    'claude: real key, never the placeholder',
    msgs.every((m) => m.headers['x-api-key'] === REAL_ANTHROPIC) &&
      !JSON.stringify(msgs).includes(basic.placeholders.ANTHROPIC_API_KEY!),
  );
  check('claude: file written', fs.existsSync(path.join(basic.ctx.cwd, 'hello.txt')));
  check(
    'claude: outcome',
    basic.outcome.ok && basic.outcome.numTurns === 3 && basic.outcome.text === 'Done.',
    basic.outcome,
  );

  const resumed = await run('claude-resume', {
    spec: { agent: 'claude', prompt: 'What did you write?' },
    ctx: { home: basic.ctx.home, cwd: basic.ctx.cwd, resumeSessionId: basic.outcome.sessionId! },
    anthropic: [{ content: [text('hello.txt')] }],
  });
  check(
    'claude: resume sends the earlier turns',
    messagesText(resumed.anthropic.messages()[0]!.body).includes('Create hello.txt'),
  );

  const context = await run('claude-context', {
    spec: {
      agent: 'claude',
      prompt: 'Which fruit?',
      context: [
        { role: 'user', content: 'Remember PAPAYA.' },
        { role: 'assistant', content: 'Noted.' },
      ],
    },
    anthropic: [{ content: [text('PAPAYA')] }],
  });
  const body = context.anthropic.messages()[0]!.body;
  check(
    'claude: context replayed as turns',
    body.messages[0]?.role === 'user' &&
      body.messages.some((m) => m.role === 'assistant' && JSON.stringify(m.content).includes('Noted.')),
  );

  const library = await run('claude-library', {
    spec: { agent: 'claude', prompt: 'Review.' },
    ctx: { agentDefinition: PERSONA },
    library: [SKILL, RULES],
    anthropic: [{ content: [text('Reviewed.')] }],
  });
  const lib = library.anthropic.messages()[0]!.body;
  check(
    'claude: persona prompt, no Bash, skill and rules seen',
    systemText(lib).includes('REVIEWER-PERSONA') &&
      !(lib.tools ?? []).some((t) => t.name === 'Bash') &&
      JSON.stringify(lib).includes('GREETSKILL') &&
      JSON.stringify(lib).includes('RULEMARKER'),
  );
}

async function codex() {
  const exec = (input: string): ResponsesTurn['output'][number] => ({
    type: 'custom_tool_call',
    name: 'exec',
    input,
  });
  const basic = await run('codex-two-turn', {
    spec: { agent: 'codex', prompt: 'Create hello.txt, then show it.', effort: 'medium' },
    openai: [
      {
        output: [
          message('I will create the file.'),
          exec(
            'text(await tools.apply_patch("*** Begin Patch\\n*** Add File: hello.txt\\n+hello\\n*** End Patch\\n"));',
          ),
        ],
      },
      {
        output: [
          exec('const r = await tools.exec_command({cmd: "cat hello.txt", login: false});\ntext(r.output);'),
        ],
      },
      { output: [message('Done.')] },
    ],
  });
  const reqs = basic.openai.responses();
  check(
    'codex: two-turn events',
    JSON.stringify(kinds(basic.events)) === JSON.stringify(TWO_TURN),
    kinds(basic.events),
  );
  check(
    'codex: real key, no websocket, only api.openai.com',
    reqs.every((r) => r.headers.authorization === `Bearer ${REAL_OPENAI}`) &&
      basic.openai.requests.every((r) => r.method === 'POST') &&
      basic.audit.every((r) => r.host === 'api.openai.com'),
    basic.audit.map((r) => r.host),
  );
  check('codex: effort', reqs[0]?.body.reasoning?.effort === 'medium');
  const resumed = await run('codex-resume', {
    spec: { agent: 'codex', prompt: 'What did you write?' },
    ctx: { home: basic.ctx.home, cwd: basic.ctx.cwd, resumeSessionId: basic.outcome.sessionId! },
    openai: [{ output: [message('hello.txt')] }],
  });
  check(
    'codex: resume sends the earlier turns',
    inputText(resumed.openai.responses()[0]!.body).includes('Create hello.txt'),
  );
  const library = await run('codex-library', {
    spec: { agent: 'codex', prompt: 'Hi.' },
    ctx: { agentDefinition: PERSONA },
    library: [SKILL, RULES],
    openai: [{ output: [message('Hi.')] }],
  });
  const all = JSON.stringify(library.openai.responses()[0]!.body);
  check(
    'codex: persona, skill and rules seen',
    all.includes('REVIEWER-PERSONA') && all.includes('GREETSKILL') && all.includes('RULEMARKER'),
  );
}

async function opencode() {
  const dir = path.join(OUT, 'opencode-two-turn', 'work');
  const basic = await run('opencode-two-turn', {
    spec: { agent: 'opencode', prompt: 'Create hello.txt, then show it.' },
    anthropic: [
      {
        content: [
          text('I will create the file.'),
          toolUse('write', { filePath: path.join(dir, 'hello.txt'), content: 'hello\n' }),
        ],
      },
      { content: [toolUse('bash', { command: 'cat hello.txt', description: 'Show it' })] },
      { content: [text('Done.')] },
    ],
  });
  check(
    'opencode: two-turn events',
    JSON.stringify(kinds(basic.events)) === JSON.stringify(TWO_TURN),
    kinds(basic.events),
  );
  check(
    'opencode: real key',
    basic.anthropic.messages().every((m) => m.headers['x-api-key'] === REAL_ANTHROPIC),
  );
  const resumed = await run('opencode-resume', {
    spec: { agent: 'opencode', prompt: 'What did you write?' },
    ctx: { home: basic.ctx.home, cwd: basic.ctx.cwd, resumeSessionId: basic.outcome.sessionId! },
    anthropic: [{ content: [text('hello.txt')] }],
  });
  check(
    'opencode: resume sends the earlier turns',
    messagesText(resumed.anthropic.mainMessages()[0]!.body).includes('Create hello.txt'),
  );
  const library = await run('opencode-library', {
    spec: { agent: 'opencode', prompt: 'Hi.' },
    ctx: { agentDefinition: PERSONA },
    library: [SKILL, RULES],
    anthropic: [{ content: [text('Hi.')] }],
  });
  const lib = library.anthropic.mainMessages()[0]!.body;
  check(
    'opencode: persona, no bash, skill and rules seen',
    JSON.stringify(lib).includes('REVIEWER-PERSONA') &&
      !(lib.tools ?? []).some((t) => t.name === 'bash') &&
      JSON.stringify(lib).includes('GREETSKILL') &&
      JSON.stringify(lib).includes('RULEMARKER'),
  );
}

const wanted = (process.argv[2] ?? 'claude,codex,opencode').split(',');
for (const [name, fn] of [
  ['claude', claude],
  ['codex', codex],
  ['opencode', opencode],
] as const) {
  if (wanted.includes(name)) await fn();
}
console.log(failures === 0 ? 'ALL PASS' : `${failures} FAILED`);
process.exitCode = failures === 0 ? 0 : 1;
