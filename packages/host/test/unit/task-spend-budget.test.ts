import { describe, expect, it, vi } from 'vitest';
import { TaskSpecSchema } from '@agentbox/protocol';
import type { OpenBudgetOptions, SpendBudget } from '@agentbox/egress';
import {
  standInAgent,
  standInRunner,
  standInTaskService,
  tempDataDirs,
  USER_BOX,
  type StandInGuest,
} from '../helpers/task-service-standins.js';
import { NO_GRANTS } from '../../src/store/key-store.js';

/**
 * A task's spend as the host counts it: every task's box gets a budget while its agent runs (with
 * the task's maxSpendUsd as its limit, or none), the count lands in the result, and a budget
 * passed stops the agent with `budget_exceeded` and the host's figures.
 */

const { make: newDataDir, dbs } = tempDataDirs('agentbox-spend-');
const actor = { keyId: 'key-1', scope: 'user' as const };

interface StandInBudget extends SpendBudget {
  spentUsd: number;
  exceeded: SpendBudget['exceeded'];
  closed: boolean;
  boxId: string;
  options: OpenBudgetOptions;
}

function budgets() {
  const opened: StandInBudget[] = [];
  const open = (boxId: string, options: OpenBudgetOptions): SpendBudget => {
    const budget: StandInBudget = {
      boxId,
      options,
      limitUsd: options.limitUsd ?? Infinity,
      spentUsd: 0,
      exceeded: undefined,
      closed: false,
      close: () => void (budget.closed = true),
    };
    opened.push(budget);
    return budget;
  };
  return { opened, open };
}

/**
 * The task's budget ends while its agent runs (as the gateway ends it: `exceeded`, then
 * `onExceeded`); the agent then waits to be stopped. Runs the task; gives its final record.
 */
async function endedBy(spec: Record<string, unknown>, exceeded: SpendBudget['exceeded'], spentUsd = 0) {
  const { opened, open } = budgets();
  let sawAbort = false;
  const { store, id } = start(
    spec,
    standInAgent(async (signal) => {
      const budget = opened[0]!;
      budget.spentUsd = spentUsd;
      budget.exceeded = exceeded;
      budget.options.onExceeded!(budget);
      await vi.waitFor(() => expect(signal?.aborted).toBe(true));
      sawAbort = true;
    }),
    open,
  );
  await vi.waitFor(() => expect(store.get(id)!.state).toBe('failed'));
  expect(sawAbort).toBe(true);
  expect(opened[0]!.closed).toBe(true);
  return {
    task: store.get(id)!,
    events: store.eventPage(id, { after: 0, limit: 100, maxBytes: 1 << 20 }).events,
  };
}

function start(spec: Record<string, unknown>, guest: StandInGuest, open: ReturnType<typeof budgets>['open']) {
  const { store, tasks } = standInTaskService(newDataDir(), {
    maxConcurrent: 1,
    runner: standInRunner(),
    guest,
    dbs,
    openSpendBudget: open,
  });
  const task = tasks.submit({
    actor,
    spec: TaskSpecSchema.parse({ agent: 'claude', prompt: 'go', ...spec }),
    userId: 'alice',
  });
  return { store, id: task.id };
}

describe("a task's spend, counted on the host", () => {
  it('is counted while the agent runs, with the task’s limit, and lands in the result', async () => {
    const { opened, open } = budgets();
    const { store, id } = start(
      { maxSpendUsd: 2.5 },
      standInAgent(async () => {
        expect(opened).toHaveLength(1);
        expect(opened[0]!.closed).toBe(false);
        opened[0]!.spentUsd = 0.42;
      }),
      open,
    );
    await vi.waitFor(() => expect(store.get(id)!.state).toBe('succeeded'));
    expect(opened[0]).toMatchObject({ boxId: USER_BOX, limitUsd: 2.5, closed: true });
    expect(store.get(id)!.result).toMatchObject({ meteredCostUsd: 0.42, costUsd: null });
  });

  it('without maxSpendUsd the count has no limit', async () => {
    const { opened, open } = budgets();
    const { store, id } = start(
      {},
      standInAgent(() => Promise.resolve()),
      open,
    );
    await vi.waitFor(() => expect(store.get(id)!.state).toBe('succeeded'));
    expect(opened[0]!.limitUsd).toBe(Infinity);
    expect(store.get(id)!.result?.meteredCostUsd).toBe(0);
  });

  it('a budget passed stops the agent: failed, budget_exceeded, with the host’s figures', async () => {
    const { task, events } = await endedBy({ maxSpendUsd: 1 }, 'spent', 1.35);
    expect(task.error).toEqual({
      code: 'budget_exceeded',
      message:
        "the task's model calls cost $1.3500 by the host's count, past its maxSpendUsd of $1.0000; the agent and its children were stopped",
    });
    expect(task.result?.meteredCostUsd).toBe(1.35);
    expect(events.at(-1)).toMatchObject({ type: 'error', content: { code: 'budget_exceeded' } });
  });

  it("the key's cap reached stops it with budget_exceeded, saying so", async () => {
    const { task } = await endedBy({}, 'account');
    expect(task.error).toMatchObject({
      code: 'budget_exceeded',
      message: expect.stringMatching(/the API key that submitted the task reached its model spend cap/),
    });
  });

  it('a key with a spend cap may run every agent (codex too): the host prices all their calls', () => {
    const { tasks } = standInTaskService(newDataDir(), { maxConcurrent: 1, dbs });
    const capped = { ...actor, grants: { ...NO_GRANTS, maxSpendUsd: 5 } };
    for (const agent of ['codex', 'shell'] as const) {
      const spec = TaskSpecSchema.parse({ agent, prompt: 'go', maxSpendUsd: 1 });
      expect(tasks.submit({ actor: capped, spec, userId: 'a' }).state).toBe('queued');
    }
  });

  it('a cost that could not be read stops it too, and says so', async () => {
    const { task } = await endedBy({ maxSpendUsd: 5 }, 'unreadable');
    expect(task.error?.message).toMatch(/could not be read, so the task's spend limits could not be held/);
  });
});
