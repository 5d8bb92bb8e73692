import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Task, TaskEvent } from '@agentbox/protocol';
import {
  createTestCa,
  startHttpsUpstream,
  type FakeUpstream,
} from '../../../egress/test/helpers/egress-harness.js';
import { gitHttpBackend, makeBareRepo } from '../../../egress/test/helpers/fake-github.js';
import {
  isSideRequest,
  messagesText,
  startFakeAnthropic,
  text,
  toolUse,
  type AnthropicTurn,
  type FakeAnthropic,
  type MessagesRequestBody,
} from '../../../../test/fake-apis/anthropic.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CLI } from '../helpers/daemon.js';
import { ndjson, startTaskDaemon, TWO_TOOL_EVENTS, type TaskDaemon } from '../helpers/task-daemon.js';

const execFileP = promisify(execFile);

const REAL_KEY = `sk-ant-api03-TASKS-${'4'.repeat(24)}`;
/** In the prompt of the model calls the spend test makes from Bash; see `usageFor`. */
const SPEND_MARK = 'agentbox-spend-mark';

/** Everything the fake API saw, as one string: the placeholder must never be in it. */
const everything = (fake: FakeAnthropic) =>
  fake.requests.map((r) => `${JSON.stringify(r.headers)}\n${r.rawBody}`).join('\n');

const toolNames = (body: MessagesRequestBody) => (body.tools ?? []).map((t) => t.name);

const systemOf = (body: MessagesRequestBody) =>
  typeof body.system === 'string' ? body.system : (body.system ?? []).map((b) => b.text).join('\n');

/**
 * Agent tasks end to end: the daemon boots real VMs, the real Claude Code CLI runs inside them and
 * reaches a scripted fake Messages API on this host through the egress gateway, which swaps the
 * box's placeholder for the real key. Nothing of agentbox is mocked.
 */
describe('agent tasks with real VMs and the real Claude Code CLI', () => {
  let t: TaskDaemon;
  let api: TaskDaemon['api'];
  let fake: FakeAnthropic;
  let github: FakeUpstream;
  let repos: string;
  /** The next turns the fake answers the agent loop with; side requests are answered apart. */
  let turns: AnthropicTurn[] = [];
  const waitTask = (id: string) => t.waitTask(id);

  beforeAll(async () => {
    const ca = await createTestCa();
    const cert = await ca.issue('api.anthropic.com');
    fake = await startFakeAnthropic({
      tls: { key: cert.keyPem, cert: cert.certPem },
      script: () => turns.shift() ?? { content: [text('(the script has no more turns)')] },
      // A call the agent makes by hand (no tools) naming the mark costs $0.45 on sonnet.
      usageFor: (body) =>
        isSideRequest(body) && messagesText(body).includes(SPEND_MARK)
          ? { input_tokens: 150_000 }
          : undefined,
    });
    repos = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-git-'));
    await makeBareRepo(repos, 'e2e-org', 'demo', 'demo readme from the fake github\n');
    await makeBareRepo(repos, 'e2e-org', 'secret', 'must not be cloned\n');
    github = await startHttpsUpstream(ca, ['github.com']);
    github.handler = gitHttpBackend(repos);
    t = await startTaskDaemon({
      ca,
      upstreams: { 'api.anthropic.com': fake.port, 'github.com': github.port },
      secrets: { ANTHROPIC_API_KEY: REAL_KEY },
      args: ['--max-concurrent-tasks', '5'],
    });
    api = t.api;
  });

  afterAll(async () => {
    await t?.close();
    await fake?.close();
    await github?.close();
    if (repos) fs.rmSync(repos, { recursive: true, force: true });
  });

  it('claude_in_the_box: Write + Bash run in the box, events stream in order, files persist', async () => {
    turns = [
      {
        content: [
          text('I will write the file.'),
          toolUse('Write', { file_path: '/workspace/hello.txt', content: 'hello from claude\n' }),
        ],
      },
      {
        content: [
          toolUse('Bash', {
            command: 'wc -c < /workspace/hello.txt > /workspace/size.txt',
            description: 'count bytes',
          }),
        ],
      },
      { content: [text('Done: hello.txt written.')] },
    ];
    const res = await api('POST', '/claude_in_the_box', {
      user_id: 'e2e-alice',
      task: 'Write hello.txt, then count its bytes.',
      files: { 'input/brief.md': '# the brief\n' },
    });
    expect(res.status).toBe(200);
    const taskId = res.headers.get('x-agentbox-task-id')!;
    const lines = await ndjson<{ type: string; content: unknown }>(res);
    expect(lines.map((l) => l.type)).toEqual(['text', 'tool_use', 'tool_use', 'text', 'completion']);
    expect(lines[1]!.content).toMatchObject({ name: 'Write', input: { file_path: '/workspace/hello.txt' } });
    expect(lines[2]!.content).toMatchObject({ name: 'Bash' });
    expect(lines.at(-1)!.content).toBe('Done: hello.txt written.');
    for (const line of lines) expect(Object.keys(line).sort()).toEqual(['content', 'type']);

    // The full log has the tool results too, in order.
    const { task, events } = await waitTask(taskId);
    expect(task).toMatchObject({
      state: 'succeeded',
      agent: 'claude',
      result: { sessionId: expect.any(String) },
    });
    const kinds = events.map((e) => e.type).filter((t) => t !== 'status');
    expect(kinds).toEqual(TWO_TOOL_EVENTS);
    expect(events.every((e, i) => e.seq === i + 1)).toBe(true);
    expect(events.find((e) => e.type === 'tool_use')!.raw).toContain('"type":"assistant"');

    const files = (await (await api('GET', '/list_workspace_files?user_id=e2e-alice')).json()) as {
      files: string[];
    };
    expect(files.files).toEqual(expect.arrayContaining(['hello.txt', 'size.txt', 'input/brief.md']));
    const hello = await api('GET', '/download_file?user_id=e2e-alice&filename=hello.txt');
    expect(await hello.text()).toBe('hello from claude\n');
    const size = await api('GET', '/download_file?user_id=e2e-alice&filename=size.txt');
    expect((await size.text()).trim()).toBe('18');

    // The real key reached the API; the box's placeholder never did.
    const main = fake.mainMessages();
    expect(main.length).toBeGreaterThanOrEqual(3);
    for (const r of fake.messages()) expect(r.headers['x-api-key']).toBe(REAL_KEY);
    expect(everything(fake)).not.toContain('agentbox-ph-');
  });

  it('a second claude_in_the_box call resumes the same Claude session', async () => {
    const before = fake.mainMessages().length;
    turns = [{ content: [text('You asked me to write hello.txt.')] }];
    const res = await api('POST', '/claude_in_the_box', {
      user_id: 'e2e-alice',
      task: 'What did I ask you before?',
    });
    const lines = await ndjson<{ type: string; content: unknown }>(res);
    expect(lines.at(-1)).toEqual({ type: 'completion', content: 'You asked me to write hello.txt.' });
    const request = fake.mainMessages()[before]!.body;
    const history = JSON.stringify(request.messages);
    expect(history).toContain('Write hello.txt, then count its bytes.');
    expect(history).toContain('hello from claude');
    expect(request.messages.length).toBeGreaterThan(3);
  });

  it('context replays prior messages when there is no session', async () => {
    const before = fake.mainMessages().length;
    turns = [{ content: [text('Your favourite colour is teal.')] }];
    const res = await api('POST', '/claude_in_the_box', {
      user_id: 'e2e-bob',
      task: 'What is my favourite colour?',
      context: [
        { role: 'user', content: 'Remember: my favourite colour is teal.' },
        { role: 'assistant', content: 'Noted, teal.' },
      ],
    });
    const lines = await ndjson<{ type: string }>(res);
    expect(lines.at(-1)).toMatchObject({ type: 'completion' });
    const history = JSON.stringify(fake.mainMessages()[before]!.body.messages);
    expect(history).toContain('Remember: my favourite colour is teal.');
    expect(history).toContain('Noted, teal.');
  });

  it('library: a _global skill and a project agent without Bash reach the CLI', async () => {
    const skill = await api('PUT', '/v1/library/skill/_global/e2e-greeter', {
      files: {
        'SKILL.md':
          '---\nname: e2e-greeter\ndescription: Greets visitors of the e2e suite warmly\n---\nSay hello.\n',
      },
    });
    expect(skill.status).toBe(200);
    const agent = await api('PUT', '/v1/library/agent/e2eproj/reviewer', {
      files: {
        'agent.json': JSON.stringify({
          name: 'reviewer',
          description: 'Reviews code',
          systemPrompt: 'You are the E2E reviewer persona.',
          disallowedTools: ['Bash'],
        }),
      },
    });
    expect(agent.status).toBe(200);
    const before = fake.mainMessages().length;
    turns = [{ content: [text('Reviewed.')] }];
    const created = await api('POST', '/v1/tasks', {
      agent: 'claude',
      prompt: 'Review the workspace.',
      userId: 'e2e-alice',
      project: 'e2eproj',
      agentDefinition: { ref: 'reviewer' },
    });
    expect(created.status).toBe(201);
    const { task } = await waitTask(((await created.json()) as Task).id);
    expect(task.state).toBe('succeeded');
    expect(task.library.map((i) => `${i.kind}/${i.namespace}/${i.name}`).sort()).toEqual([
      'agent/e2eproj/reviewer',
      'skill/_global/e2e-greeter',
    ]);
    const body = fake.mainMessages()[before]!.body;
    expect(toolNames(body)).not.toContain('Bash');
    expect(toolNames(body).length).toBeGreaterThan(0);
    const seen = `${systemOf(body)}\n${JSON.stringify(body.tools)}\n${JSON.stringify(body.messages)}`;
    expect(seen).toContain('E2E reviewer persona');
    expect(seen).toContain('Greets visitors of the e2e suite warmly');
  });

  it('8 tasks at once with a cap of 5: never more than 5 running, all 8 complete', async () => {
    const created = await api('POST', '/v1/boxes', { runtime: 'bash' });
    const box = (await created.json()) as { id: string };
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await api('POST', '/v1/tasks', {
        agent: 'shell',
        boxId: box.id,
        prompt: `sleep 3; echo task ${i}`,
      });
      ids.push(((await r.json()) as Task).id);
    }
    const db = new Database(path.join(t.dataDir, 'agentbox.db'), { readonly: true, fileMustExist: true });
    let maxRunning = 0;
    let sawQueued = false;
    try {
      for (;;) {
        const running = (
          db.prepare("SELECT COUNT(*) AS n FROM tasks WHERE state = 'running'").get() as { n: number }
        ).n;
        maxRunning = Math.max(maxRunning, running);
        const states = db
          .prepare(`SELECT state FROM tasks WHERE id IN (${ids.map(() => '?').join(',')})`)
          .all(...ids) as { state: string }[];
        if (states.some((s) => s.state === 'queued')) sawQueued = true;
        if (states.every((s) => !['queued', 'running'].includes(s.state))) {
          expect(states.every((s) => s.state === 'succeeded')).toBe(true);
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      db.close();
    }
    expect(maxRunning).toBeLessThanOrEqual(5);
    expect(maxRunning).toBeGreaterThanOrEqual(2);
    expect(sawQueued).toBe(true);
    for (const id of ids) {
      const { events } = await waitTask(id);
      expect(events.filter((e) => e.type === 'text').map((e) => e.content)).toEqual([
        `task ${ids.indexOf(id)}`,
      ]);
    }
    await api('DELETE', `/v1/boxes/${box.id}`);
  });

  it('agentbox task run --follow: a shell task in a fresh box, printed live; the box is gone after', async () => {
    const boxesBefore = ((await (await api('GET', '/v1/boxes')).json()) as { boxes: { id: string }[] }).boxes;
    const env = { ...process.env, AGENTBOX_URL: t.daemon.url, AGENTBOX_API_KEY: t.daemon.initialKey! };
    const { stdout, stderr } = await execFileP(
      process.execPath,
      [CLI, 'task', 'run', '--agent', 'shell', '--prompt', 'echo hi from the cli; uname -s', '--follow'],
      { env },
    );
    expect(stdout).toContain('hi from the cli');
    expect(stdout).toContain('Linux');
    expect(stderr).toMatch(/task task-\w+ succeeded/);
    const json = await execFileP(
      process.execPath,
      [CLI, 'task', 'run', '--agent', 'shell', '--prompt', 'exit 4', '--follow', '--json'],
      { env },
    ).catch((err: { code: number; stdout: string }) => err);
    expect('code' in json && json.code).toBe(1);
    const events = json.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as TaskEvent);
    expect(events.at(-1)!.type).toBe('error');
    const bad = await execFileP(
      process.execPath,
      [CLI, 'task', 'run', '--agent', 'shell', '--prompt', 'x', '--repo', 'http://x/y'],
      {
        env,
      },
    ).catch((err: { code: number; stderr: string }) => err);
    expect('code' in bad && bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^agentbox: --repo: must be an https/);
    const boxesAfter = ((await (await api('GET', '/v1/boxes')).json()) as { boxes: { id: string }[] }).boxes;
    expect(boxesAfter.map((b) => b.id).sort()).toEqual(boxesBefore.map((b) => b.id).sort());
  });

  it("a task's own API key: the agent in its box sees a placeholder, the API gets the key", async () => {
    const taskKey = `sk-ant-api03-OWN-${'7'.repeat(24)}`;
    const seen = fake.messages().length;
    turns = [
      {
        content: [toolUse('Bash', { command: 'echo "key=$ANTHROPIC_API_KEY"', description: 'show the key' })],
      },
      { content: [text('shown')] },
    ];
    const r = await api('POST', '/v1/tasks', {
      agent: 'claude',
      prompt: 'Show the API key you have.',
      envVars: { ANTHROPIC_API_KEY: taskKey },
    });
    const { task, events } = await waitTask(((await r.json()) as Task).id);
    expect(task.state).toBe('succeeded');
    const result = events.find((e) => e.type === 'tool_result');
    expect(JSON.stringify(result?.content)).toMatch(/key=agentbox-ph-/);
    expect(JSON.stringify(events)).not.toContain(taskKey);
    const sent = fake.messages().slice(seen);
    expect(sent.length).toBeGreaterThanOrEqual(2);
    for (const q of sent) expect(q.headers['x-api-key']).toBe(taskKey);
  });

  it('maxSpendUsd is held on the host: model calls made behind the agent are priced and stopped', async () => {
    // A prompt-injected agent spends the host's key with curl, where Claude Code's own
    // --max-budget-usd never sees it: five calls of $0.45 against a $1 budget.
    const calls = () => fake.messages().filter((q) => messagesText(q.body).includes(SPEND_MARK)).length;
    const before = calls();
    const body = JSON.stringify({
      model: 'claude-sonnet-4-5',
      max_tokens: 16,
      messages: [{ role: 'user', content: SPEND_MARK }],
    });
    turns = [
      {
        content: [
          toolUse('Bash', {
            command:
              `for i in 1 2 3 4 5; do curl -sS -o /dev/null -w "call $i: %{http_code}\\n" ` +
              `-H "x-api-key: $ANTHROPIC_API_KEY" -H 'content-type: application/json' ` +
              `-d '${body}' https://api.anthropic.com/v1/messages; done; sleep 60`,
            description: 'spend',
          }),
        ],
      },
      { content: [text('spent')] },
    ];
    const box = (await (await api('POST', '/v1/boxes', {})).json()) as { id: string };
    const r = await api('POST', '/v1/tasks', {
      agent: 'claude',
      boxId: box.id,
      model: 'claude-sonnet-4-5',
      prompt: 'Spend.',
      maxSpendUsd: 1,
    });
    const { task, events } = await waitTask(((await r.json()) as Task).id);
    expect(task.state).toBe('failed');
    expect(task.error?.code).toBe('budget_exceeded');
    expect(task.error?.message).toMatch(/by the host's count, past its maxSpendUsd of \$1\.0000/);
    // the third call passed the budget; none after it reached the API
    expect(calls() - before).toBe(3);
    const metered = task.result?.meteredCostUsd ?? 0;
    expect(metered).toBeGreaterThanOrEqual(1.35);
    expect(metered).toBeLessThan(1.5);
    expect(events.at(-1)).toMatchObject({ type: 'error', content: { code: 'budget_exceeded' } });
    // the audit has each priced call; whatever the box sent after the budget was refused
    const { records } = (await (await api('GET', `/v1/boxes/${box.id}/egress?limit=1000`)).json()) as {
      records: { path?: string; code: string; costUsd?: number }[];
    };
    const priced = records.filter((x) => x.costUsd !== undefined && x.costUsd > 0.4);
    expect(priced.map((x) => x.costUsd!.toFixed(2))).toEqual(['0.45', '0.45', '0.45']);
    for (const x of records.filter((y) => y.code.startsWith('budget_')))
      expect(x.code).toBe('budget_exceeded');

    // A script's own calls are held the same way (no agent flag at all): $0.45 each against $0.50.
    const before2 = calls();
    const shell = await api('POST', '/v1/tasks', {
      agent: 'shell',
      boxId: box.id,
      maxSpendUsd: 0.5,
      prompt:
        `for i in 1 2 3 4; do curl -sS -o /dev/null -w "call $i: %{http_code}\\n" ` +
        `-H "x-api-key: $ANTHROPIC_API_KEY" -H 'content-type: application/json' ` +
        `-d '${body}' https://api.anthropic.com/v1/messages; done; sleep 60`,
    });
    const scripted = await waitTask(((await shell.json()) as Task).id);
    expect(scripted.task.error?.code).toBe('budget_exceeded');
    expect(calls() - before2).toBe(2);
    expect(scripted.task.result?.meteredCostUsd).toBeCloseTo(0.9, 2);
    await api('DELETE', `/v1/boxes/${box.id}`);
  });

  it("a key's spend cap holds across its boxes, outside any task", async () => {
    const made = await api('POST', '/v1/keys', { name: 'capped', grants: { maxSpendUsd: 0.5 } });
    expect(made.status).toBe(201);
    const capped = (await made.json()) as { id: string; key: string };
    const asCapped = (method: string, route: string, body?: unknown) =>
      fetch(`${t.daemon.url}${route}`, {
        method,
        headers: { 'x-api-key': capped.key, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const box = (await (
      await asCapped('POST', '/v1/boxes', { egress: { presets: ['anthropic'] } })
    ).json()) as {
      id: string;
    };
    const body = JSON.stringify({
      model: 'claude-sonnet-4-5',
      max_tokens: 16,
      messages: [{ role: 'user', content: SPEND_MARK }],
    });
    const curls = (n: number) =>
      `for i in $(seq ${n}); do curl -sS -o /dev/null -w "%{http_code} " ` +
      `-H "x-api-key: $ANTHROPIC_API_KEY" -H 'content-type: application/json' ` +
      `-d '${body}' https://api.anthropic.com/v1/messages; done`;
    const run = async (command: string) => {
      const r = await asCapped('POST', `/v1/boxes/${box.id}/exec?stream=false`, { command });
      expect(r.status).toBe(200);
      return Buffer.from(((await r.json()) as { stdout: string }).stdout, 'base64').toString();
    };
    // $0.45 a call: the second passes $0.50, the third is refused before the API sees it
    const calls = () => fake.messages().filter((q) => messagesText(q.body).includes(SPEND_MARK)).length;
    const before = calls();
    expect((await run(curls(3))).trim()).toBe('200 200 403');
    expect(calls() - before).toBe(2);
    const refused = await run(
      `curl -sS -H "x-api-key: $ANTHROPIC_API_KEY" -d '${body}' https://api.anthropic.com/v1/messages`,
    );
    expect(refused).toMatch(
      /budget_exceeded: this box's API key has reached its model spend cap \(\$0\.50\)/,
    );
    // the operator sees what it spent, and raising the cap lets its boxes spend again
    await new Promise((r) => setTimeout(r, 1500));
    const listed = (await (await api('GET', '/v1/keys')).json()) as {
      keys: { id: string; spentUsd: number }[];
    };
    expect(listed.keys.find((k) => k.id === capped.id)?.spentUsd).toBeCloseTo(0.9, 2);
    expect((await api('PUT', `/v1/keys/${capped.id}/grants`, { maxSpendUsd: 5 })).status).toBe(200);
    expect((await run(curls(1))).trim()).toBe('200');
    // a new billing period: the count starts again, and the cap holds against it
    expect((await api('PUT', `/v1/keys/${capped.id}/grants`, { maxSpendUsd: 0.5 })).status).toBe(200);
    expect((await run(curls(1))).trim()).toBe('403');
    const reset = await api('POST', `/v1/keys/${capped.id}/spend/reset`);
    expect(((await reset.json()) as { spentUsd: number }).spentUsd).toBe(0);
    expect((await run(curls(3))).trim()).toBe('200 200 403');
    await asCapped('DELETE', `/v1/boxes/${box.id}`);
  });

  it('gitRepoUrl: the repo is cloned through the gateway and becomes the cwd; other repos stay shut', async () => {
    const created = await api('POST', '/v1/tasks', {
      agent: 'shell',
      gitRepoUrl: 'https://github.com/e2e-org/demo',
      prompt:
        'pwd; cat README.md; git clone -q https://github.com/e2e-org/secret /tmp/secret 2>&1 || echo other-repo-refused',
    });
    const id = ((await created.json()) as Task).id;
    const { task, events } = await waitTask(id);
    const lines = events.filter((e) => e.type === 'text').map((e) => String(e.content));
    expect(task.state, JSON.stringify(events)).toBe('succeeded');
    expect(lines[0]).toBe('/workspace/demo');
    expect(lines[1]).toBe('demo readme from the fake github');
    expect(lines).toContain('other-repo-refused');
    expect(lines.join('\n')).not.toContain('must not be cloned');
    expect(events.some((e) => e.type === 'status' && JSON.stringify(e.content).includes('cloning'))).toBe(
      true,
    );
    const audit = (await (await api('GET', `/v1/boxes/${task.boxId}/egress`)).json()) as {
      records: { host: string; path?: string; decision: string; code: string }[];
    };
    expect(audit.records.some((r) => r.path?.includes('/e2e-org/demo') && r.decision === 'allow')).toBe(true);
    expect(
      audit.records.some((r) => r.path?.includes('/e2e-org/secret') && r.code === 'github_repo_not_allowed'),
    ).toBe(true);
  });
});
