import { describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema } from '@agentbox/protocol';
import type { AgentRunner } from '@agentbox/runners';
import {
  standInRunner,
  standInTaskService,
  tempDataDirs,
  type StandInGuest,
} from '../helpers/task-service-standins.js';

const { make: newDataDir, dbs } = tempDataDirs('agentbox-final-');

const actor = { keyId: 'key-1', scope: 'user' as const };
const spec = TaskSpecSchema.parse({ agent: 'claude', prompt: 'go' });

/** A guest whose agent prints `stdout`, then exits with `exitCode`. */
const printing = (stdout: string, exitCode: number): StandInGuest => ({
  writeFile: () => Promise.resolve({ bytes: 0 }),
  exec: async (_request, handlers = {}) => {
    await handlers.onStdout?.(Buffer.from(stdout));
    return { type: 'exit', exitCode, signal: null, timedOut: false, durationMs: 1 };
  },
});

function run(runner: AgentRunner, guest: StandInGuest) {
  const { store, tasks } = standInTaskService(newDataDir(), { maxConcurrent: 1, runner, guest, dbs });
  const task = tasks.submit({ actor, spec, userId: 'alice' });
  return { store, id: task.id };
}

describe("a task's last event", () => {
  it('is an error when the agent reported a result and then exited non-zero', async () => {
    const runner: AgentRunner = {
      ...standInRunner(),
      parser: () => ({
        line: (text) => [{ type: 'completion', content: text }],
        end: () => [],
        outcome: () => ({
          ok: true,
          sessionId: null,
          numTurns: 1,
          costUsd: null,
          usage: null,
          text: 'all done',
          error: null,
        }),
      }),
    };
    const { store, id } = run(runner, printing('all done\n', 1));
    await vi.waitFor(() => expect(store.get(id)!.state).toBe('failed'));
    const events = store.eventPage(id, { after: 0, limit: 100, maxBytes: 1 << 20 }).events;
    expect(events.map((e) => e.type).slice(-2)).toEqual(['completion', 'error']);
    expect(events.at(-1)!.content).toEqual({ code: 'agent_failed', message: 'the agent exited with code 1' });
    expect(store.get(id)!.error).toEqual({ code: 'agent_failed', message: 'the agent exited with code 1' });
  });

  it('is the parser’s own error, once, when it reported one', async () => {
    const runner: AgentRunner = {
      ...standInRunner(),
      parser: () => ({
        line: () => [{ type: 'error', content: { code: 'agent_error', message: 'boom' } }],
        end: () => [],
        outcome: () => ({
          ok: false,
          sessionId: null,
          numTurns: 1,
          costUsd: null,
          usage: null,
          text: null,
          error: { code: 'agent_error', message: 'boom' },
        }),
      }),
    };
    const { store, id } = run(runner, printing('{"type":"result","is_error":true}\n', 1));
    await vi.waitFor(() => expect(store.get(id)!.state).toBe('failed'));
    const events = store.eventPage(id, { after: 0, limit: 100, maxBytes: 1 << 20 }).events;
    expect(events.filter((e) => e.type === 'error')).toHaveLength(1);
  });

  it('says the daemon failed, without the detail, when parsing the output threw', async () => {
    const runner: AgentRunner = {
      ...standInRunner(),
      parser: () => ({
        line: () => {
          throw new RangeError('Maximum call stack size exceeded at /home/op/agentbox/secret-path.js');
        },
        end: () => [],
        outcome: () => standInRunner().parser().outcome(),
      }),
    };
    const { store, id } = run(runner, printing('{"deep":[[[[]]]]}\n', 0));
    await vi.waitFor(() => expect(store.get(id)!.state).toBe('failed'));
    const error = store.get(id)!.error!;
    expect(error.code).toBe('internal');
    expect(error.message).not.toMatch(/stack|secret-path/);
    expect(error.message).toContain(id);
  });
});
