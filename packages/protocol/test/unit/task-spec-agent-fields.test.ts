import { describe, expect, it } from 'vitest';
import { AGENT_KINDS, CreateTaskRequestSchema, TaskSpecSchema } from '../../src/index.js';

/** Which agents take each limit: the rest would run without it, so the spec is refused. */
const TAKES: Record<string, readonly string[]> = {
  maxSpendUsd: ['claude'],
  allowedTools: ['claude', 'opencode'],
  disallowedTools: ['claude', 'opencode'],
};
const VALUES: Record<string, unknown> = {
  maxSpendUsd: 0.5,
  allowedTools: ['Read'],
  disallowedTools: ['Bash'],
};

describe('per-agent task spec fields', () => {
  it('takes a limit only for the agents that enforce it, and says which do', () => {
    let refused = 0;
    for (const [field, agents] of Object.entries(TAKES)) {
      for (const agent of AGENT_KINDS) {
        const spec = { prompt: 'x', agent, [field]: VALUES[field] };
        for (const schema of [TaskSpecSchema, CreateTaskRequestSchema]) {
          const result = schema.safeParse(spec);
          expect(result.success, `${agent} ${field}`).toBe(agents.includes(agent));
          if (result.success) continue;
          refused++;
          expect(result.error.issues).toEqual([
            expect.objectContaining({
              path: [field],
              message: `${agent} cannot enforce ${field}; only ${agents.join(' and ')} can`,
            }),
          ]);
        }
      }
    }
    // 3 agents without a budget, 2 without each tool list, through both schemas.
    expect(refused).toBe((3 + 2 + 2) * 2);
  });

  it('applies to the default agent (claude) and lets an empty tool list through', () => {
    expect(TaskSpecSchema.safeParse({ prompt: 'x', maxSpendUsd: 1 }).success).toBe(true);
    expect(TaskSpecSchema.safeParse({ prompt: 'x', agent: 'codex', allowedTools: [] }).success).toBe(true);
  });
});
