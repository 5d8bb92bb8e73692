import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Task, TaskEvent } from '@agentbox/protocol';
import { createTestCa } from '../../../egress/test/helpers/egress-harness.js';
import {
  startFakeAnthropic,
  text,
  toolUse,
  type AnthropicTurn,
  type FakeAnthropic,
} from '../../../../test/fake-apis/anthropic.js';
import { ndjson, startTaskDaemon, TWO_TOOL_EVENTS, type TaskDaemon } from '../helpers/task-daemon.js';

const REAL_KEY = `sk-ant-api03-RESTART-${'5'.repeat(24)}`;

/**
 * A task outlives its daemon: the daemon is killed (`kill -9`) while the real Claude Code CLI runs
 * a tool in its box; the agent runs on, its output journaled in the box, and the next daemon takes
 * the run up, stores what it had not, and the agent's next model call goes through the new
 * daemon's gateway. Nothing of agentbox is mocked.
 */
describe('a running agent task across a daemon kill -9', () => {
  let t: TaskDaemon;
  let fake: FakeAnthropic;
  let turns: AnthropicTurn[] = [];

  beforeAll(async () => {
    const ca = await createTestCa();
    const cert = await ca.issue('api.anthropic.com');
    fake = await startFakeAnthropic({
      tls: { key: cert.keyPem, cert: cert.certPem },
      script: () => turns.shift() ?? { content: [text('(the script has no more turns)')] },
    });
    t = await startTaskDaemon({
      ca,
      upstreams: { 'api.anthropic.com': fake.port },
      secrets: { ANTHROPIC_API_KEY: REAL_KEY },
    });
  });

  afterAll(async () => {
    await t?.close();
    await fake?.close();
  });

  const storedEvents = async (id: string) =>
    ndjson<TaskEvent>(await t.api('GET', `/v1/tasks/${id}/events?follow=false`));

  it('is taken up by the next daemon, after a kill -9 and after a graceful stop: every event once, the end', async () => {
    // Each tool waits for a file the test writes once the next daemon runs.
    const waitFor = (name: string) =>
      toolUse('Bash', {
        command: `while [ ! -e /workspace/${name} ]; do sleep 0.2; done; echo "tool saw $(cat /workspace/${name})"`,
        description: `wait for ${name}`,
      });
    turns = [
      { content: [text('Waiting for the first go.'), waitFor('go1')] },
      { content: [waitFor('go2')] },
      { content: [text('All done after the restarts.')] },
    ];
    const created = await t.api('POST', '/v1/tasks', { agent: 'claude', prompt: 'Wait for the go files.' });
    expect(created.status).toBe(201);
    const id = ((await created.json()) as Task).id;
    let boxId: string | undefined;
    /** Waits until the task has stored its `n`th tool call. */
    const toolCalls = async (n: number) => {
      for (let i = 0; ; i++) {
        const events = await storedEvents(id);
        boxId ??= events
          .map((e) => (e.type === 'status' ? (e.content as { boxId?: string }).boxId : undefined))
          .find((b) => b !== undefined);
        if (events.filter((e) => e.type === 'tool_use').length >= n) return;
        expect(i, `the agent never made tool call ${n}`).toBeLessThan(600);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const go = async (name: string) => {
      const res = await t.api('PUT', `/v1/boxes/${boxId}/files?path=${name}`, Buffer.from(`the ${name}`));
      expect(res.status, await res.clone().text()).toBe(200);
    };
    const state = async () => ((await (await t.api('GET', `/v1/tasks/${id}`)).json()) as Task).state;

    await toolCalls(1);
    await t.restart('SIGKILL');
    // The new daemon took the task up; it is still running, its agent waiting in its tool.
    expect(await state()).toBe('running');
    await go('go1');
    await toolCalls(2);
    // A graceful stop leaves the agent running too, for the next daemon.
    await t.restart('SIGTERM');
    expect(await state()).toBe('running');
    await go('go2');

    const { task, events } = await t.waitTask(id);
    expect(task.state, JSON.stringify(task.error)).toBe('succeeded');
    expect(events.filter((e) => e.type !== 'status').map((e) => e.type)).toEqual(TWO_TOOL_EVENTS);
    expect(events.filter((e) => e.type === 'tool_result').map((e) => e.content)).toMatchObject([
      { content: expect.stringContaining('tool saw the go1') },
      { content: expect.stringContaining('tool saw the go2') },
    ]);
    // Claude Code may print lines of its own meanwhile (`system/api_retry` for a model call made
    // while no daemon ran, on a loaded host where a restart takes longer): `progress` statuses.
    const states = events
      .filter((e) => e.type === 'status')
      .map((e) => (e.content as { state: string }).state);
    expect(states.filter((s) => s !== 'progress')).toEqual([
      'queued',
      'running',
      'started',
      'reattached',
      'reattached',
    ]);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(task.result!.text).toBe('All done after the restarts.');
    // The model calls after each restart went through the new daemon's gateway, with the real key.
    expect(fake.mainMessages().length).toBe(3);
    for (const r of fake.messages()) expect(r.headers['x-api-key']).toBe(REAL_KEY);
    // An ephemeral task's box goes with the task (just after its end), as without the restart.
    for (let i = 0; ; i++) {
      const box = await t.api('GET', `/v1/boxes/${boxId}`);
      if (box.status === 404 || ((await box.json()) as { state: string }).state === 'deleted') break;
      expect(i, 'the task box was not deleted').toBeLessThan(100);
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
