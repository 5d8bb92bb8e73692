import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Task } from '@agentbox/protocol';
import { createTestCa } from '../../../egress/test/helpers/egress-harness.js';
import {
  startFakeAnthropic,
  text,
  toolUse,
  type AnthropicTurn,
  type FakeAnthropic,
} from '../../../../test/fake-apis/anthropic.js';
import {
  message,
  startFakeResponses,
  type FakeResponses,
  type ResponsesTurn,
} from '../../../../test/fake-apis/openai-responses.js';
import { startTaskDaemon, TWO_TOOL_EVENTS, type TaskDaemon } from '../helpers/task-daemon.js';

const ANTHROPIC_KEY = `sk-ant-api03-OPENCODE-${'5'.repeat(24)}`;
const OPENAI_KEY = `sk-proj-CODEX-${'6'.repeat(32)}`;
/**
 * OpenCode spends minutes of guest CPU before its first request under TCG (its Bun bundle and
 * start-up: ~80 s on this host on a good day, ~260 s on a slow one); its task gets room for that.
 */
const OPENCODE_TIMEOUT_S = 600;

/**
 * The same scripted flow as for Claude Code, for Codex (against a fake Responses API) and OpenCode
 * (against the fake Messages API), both real CLIs in one persistent box, reached through the gateway.
 */
describe('agent tasks: Codex and OpenCode in a real VM', () => {
  let t: TaskDaemon;
  let anthropic: FakeAnthropic;
  let openai: FakeResponses;
  let anthropicTurns: AnthropicTurn[] = [];
  let openaiTurns: ResponsesTurn[] = [];

  const run = async (body: Record<string, unknown>) => {
    const created = await t.api('POST', '/v1/tasks', { userId: 'e2e-agents', ...body });
    expect(created.status).toBe(201);
    const { task, events } = await t.waitTask(((await created.json()) as Task).id);
    return { task, events, kinds: events.map((e) => e.type).filter((k) => k !== 'status') };
  };
  const readFile = async (boxId: string, name: string) =>
    (await t.api('GET', `/v1/boxes/${boxId}/files?path=${encodeURIComponent(name)}`)).text();

  beforeAll(async () => {
    const ca = await createTestCa();
    const anthropicCert = await ca.issue('api.anthropic.com');
    const openaiCert = await ca.issue('api.openai.com');
    anthropic = await startFakeAnthropic({
      tls: { key: anthropicCert.keyPem, cert: anthropicCert.certPem },
      script: () => anthropicTurns.shift() ?? { content: [text('(no more turns)')] },
    });
    openai = await startFakeResponses({
      tls: { key: openaiCert.keyPem, cert: openaiCert.certPem },
      script: () => openaiTurns.shift() ?? { output: [message('(no more turns)')] },
    });
    t = await startTaskDaemon({
      ca,
      upstreams: { 'api.anthropic.com': anthropic.port, 'api.openai.com': openai.port },
      secrets: { ANTHROPIC_API_KEY: ANTHROPIC_KEY, OPENAI_API_KEY: OPENAI_KEY },
    });
  });

  afterAll(async () => {
    await t?.close();
    await anthropic?.close();
    await openai?.close();
  });

  it('codex: apply_patch + exec_command run in the box, events in order, real key only', async () => {
    const exec = (input: string) => ({ type: 'custom_tool_call' as const, name: 'exec', input });
    openaiTurns = [
      {
        output: [
          message('I will create the file.'),
          exec(
            'text(await tools.apply_patch("*** Begin Patch\\n*** Add File: codex.txt\\n+hello from codex\\n*** End Patch\\n"));',
          ),
        ],
      },
      {
        output: [
          exec(
            'const r = await tools.exec_command({cmd: "wc -l codex.txt", login: false});\ntext(r.output);',
          ),
        ],
      },
      { output: [message('Done with codex.')] },
    ];
    const { task, kinds, events } = await run({
      agent: 'codex',
      prompt: 'Create codex.txt, then count its lines.',
    });
    expect(task.state, JSON.stringify(events.slice(-3))).toBe('succeeded');
    expect(kinds).toEqual(TWO_TOOL_EVENTS);
    expect(events.at(-1)).toMatchObject({ type: 'completion', content: 'Done with codex.' });
    expect(await readFile(task.boxId!, 'codex.txt')).toBe('hello from codex\n');
    const requests = openai.responses();
    expect(requests.length).toBe(3);
    for (const r of requests) expect(r.headers.authorization).toBe(`Bearer ${OPENAI_KEY}`);
    expect(JSON.stringify(openai.requests.map((r) => [r.headers, r.rawBody]))).not.toContain('agentbox-ph-');
  });

  it('codex: maxSpendUsd is held on the host, priced from the Responses API answers', async () => {
    // A first answer whose prompt cost $1.25 (a million tokens of gpt-5-codex) against $0.50.
    openaiTurns = [{ output: [message('an expensive first answer')], inputTokens: 1_000_000 }];
    const before = openai.responses().length;
    const { task } = await run({ agent: 'codex', model: 'gpt-5-codex', prompt: 'Spend.', maxSpendUsd: 0.5 });
    expect(task.state).toBe('failed');
    expect(task.error?.code).toBe('budget_exceeded');
    expect(task.error?.message).toMatch(/by the host's count, past its maxSpendUsd of \$0\.5000/);
    expect(task.result?.meteredCostUsd).toBeGreaterThanOrEqual(1.25);
    // the budget passed on that answer: no later call of the task reached the API
    expect(openai.responses().length - before).toBe(1);
    openaiTurns = [];
  });

  it(
    'opencode: write + bash run in the box, events in order, real key only',
    async () => {
      anthropicTurns = [
        {
          content: [
            text('I will create the file.'),
            toolUse('write', { filePath: '/workspace/opencode.txt', content: 'hello from opencode\n' }),
          ],
        },
        {
          content: [
            toolUse('bash', { command: 'wc -c < opencode.txt > opencode.size', description: 'Count bytes' }),
          ],
        },
        { content: [text('Done with opencode.')] },
      ];
      const { task, kinds, events } = await run({
        agent: 'opencode',
        prompt: 'Create opencode.txt, then count it.',
        timeoutSeconds: OPENCODE_TIMEOUT_S,
      });
      expect(task.state, JSON.stringify(events.slice(-3))).toBe('succeeded');
      expect(kinds).toEqual(TWO_TOOL_EVENTS);
      expect(await readFile(task.boxId!, 'opencode.txt')).toBe('hello from opencode\n');
      expect((await readFile(task.boxId!, 'opencode.size')).trim()).toBe('20');
      for (const r of anthropic.messages()) expect(r.headers['x-api-key']).toBe(ANTHROPIC_KEY);
      expect(JSON.stringify(anthropic.requests.map((r) => [r.headers, r.rawBody]))).not.toContain(
        'agentbox-ph-',
      );
    },
    (OPENCODE_TIMEOUT_S + 60) * 1000,
  );
});
