import { describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema } from '@agentbox/protocol';
import {
  standInAgent,
  standInRunner,
  standInTaskService,
  tempDataDirs,
} from '../helpers/task-service-standins.js';

/**
 * A task's timeout counts the time its agent could run: time the host held its box paused for want
 * of disk space (see disk-guard.ts) moves the deadline by as much.
 */

const { make: newDataDir, dbs } = tempDataDirs('agentbox-held-timeout-');

/** Runs a 1 s-timeout task whose agent takes `agentMs`, while the box's disk-hold time reads `held()`. */
function run(agentMs: number, held: () => number) {
  const { store, tasks } = standInTaskService(newDataDir(), {
    maxConcurrent: 1,
    runner: standInRunner(),
    guest: standInAgent(
      (signal) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, agentMs);
          signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
        }),
    ),
    dbs,
    heldMs: held,
  });
  const task = tasks.submit({
    actor: { keyId: 'key-1', scope: 'user' },
    spec: TaskSpecSchema.parse({ agent: 'claude', prompt: 'go', timeoutSeconds: 1 }),
    userId: 'alice',
  });
  return () => store.get(task.id)!.state;
}

describe("a task's timeout and the disk guard", () => {
  it('moves the deadline by the time the box was held', async () => {
    const started = Date.now();
    // Held for 800 ms from the start of the run: the agent's 1.5 s fit in 1 s + 800 ms.
    const state = run(1_500, () => Math.min(800, Date.now() - started));
    await vi.waitFor(() => expect(state()).toBe('succeeded'), { timeout: 5_000 });
  });

  it('without a hold, the task times out at its timeout', async () => {
    const state = run(1_500, () => 0);
    await vi.waitFor(() => expect(state()).toBe('timed_out'), { timeout: 5_000 });
  });

  it('a hold that ended before the task took the box gives it nothing', async () => {
    const state = run(1_500, () => 60_000);
    await vi.waitFor(() => expect(state()).toBe('timed_out'), { timeout: 5_000 });
  });
});
