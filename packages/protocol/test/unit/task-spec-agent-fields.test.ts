import { describe, expect, it } from 'vitest';
import {
  AGENT_DEFINITION_AGENTS,
  AGENT_DEFINITION_ONLY_FIELDS,
  AGENT_KINDS,
  agentDefinitionIssues,
  CreateTaskRequestSchema,
  TaskSpecSchema,
  type AgentKind,
} from '../../src/index.js';

/** Which agents take each limit: the rest would run without it, so the spec is refused. */
const TAKES: Record<string, readonly string[]> = {
  allowedTools: ['claude', 'opencode'],
  disallowedTools: ['claude', 'opencode'],
};
const VALUES: Record<string, unknown> = {
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
    // 2 agents without each tool list, through both schemas.
    expect(refused).toBe((2 + 2) * 2);
  });

  it('applies to the default agent (claude) and lets an empty tool list through', () => {
    expect(TaskSpecSchema.safeParse({ prompt: 'x', maxSpendUsd: 1 }).success).toBe(true);
    // the host holds a budget for every agent
    for (const agent of AGENT_KINDS)
      expect(TaskSpecSchema.safeParse({ prompt: 'x', agent, maxSpendUsd: 1 }).success, agent).toBe(true);
    expect(TaskSpecSchema.safeParse({ prompt: 'x', agent: 'codex', allowedTools: [] }).success).toBe(true);
  });
});

/** What each agent's runner does with an agent definition: the rest would be dropped, so it is refused. */
describe('agent definitions per agent', () => {
  const full = {
    name: 'reviewer',
    description: 'Reviews diffs',
    model: 'some-model',
    systemPrompt: 'You review.',
    tools: ['Read'],
    disallowedTools: ['Bash'],
    maxTokens: 4000,
  };
  const refusals = (agent: AgentKind, agentDefinition: unknown) => {
    const results = [TaskSpecSchema, CreateTaskRequestSchema].map((schema) =>
      schema.safeParse({ prompt: 'x', agent, agentDefinition }),
    );
    // Both schemas agree.
    expect(results[0]!.success).toBe(results[1]!.success);
    return results[0]!.success ? [] : results[0]!.error.issues.map((i) => [i.path.join('.'), i.message]);
  };

  it('claude honours all of it', () => {
    expect(refusals('claude', full)).toEqual([]);
    expect(agentDefinitionIssues('claude', full)).toEqual([]);
  });

  it('codex takes name, description, model and system prompt; refuses tool lists and maxTokens by name', () => {
    const { tools, disallowedTools, maxTokens, ...honoured } = full;
    expect(refusals('codex', honoured)).toEqual([]);
    expect(refusals('codex', { ref: 'reviewer' })).toEqual([]);
    expect(refusals('codex', full)).toEqual([
      ['agentDefinition.tools', 'codex cannot honour agentDefinition.tools; only claude and opencode can'],
      [
        'agentDefinition.disallowedTools',
        'codex cannot honour agentDefinition.disallowedTools; only claude and opencode can',
      ],
      ['agentDefinition.maxTokens', 'codex cannot honour agentDefinition.maxTokens; only claude can'],
    ]);
    expect(refusals('codex', { ...honoured, tools })).toHaveLength(1);
    expect(refusals('codex', { ...honoured, disallowedTools })).toHaveLength(1);
    expect(refusals('codex', { ...honoured, maxTokens })).toHaveLength(1);
    // An empty list asks for nothing, as for the spec's own tool lists.
    expect(refusals('codex', { ...honoured, tools: [], disallowedTools: [] })).toEqual([]);
  });

  it('opencode honours the tool lists but not maxTokens', () => {
    const { maxTokens, ...rest } = full;
    expect(refusals('opencode', rest)).toEqual([]);
    expect(refusals('opencode', { ...rest, maxTokens })).toEqual([
      ['agentDefinition.maxTokens', 'opencode cannot honour agentDefinition.maxTokens; only claude can'],
    ]);
  });

  it('shell refuses any agent definition, inline or a library ref', () => {
    const message = 'shell cannot run as an agentDefinition; only claude, codex, opencode can';
    for (const def of [{ name: 'bare' }, full, { ref: 'reviewer' }]) {
      expect(refusals('shell', def)).toEqual([['agentDefinition', message]]);
    }
    expect(refusals('shell', undefined)).toEqual([]);
  });

  it('the pure check: one issue per dropped field, paths relative to the definition', () => {
    expect(agentDefinitionIssues('codex', undefined)).toEqual([]);
    expect(agentDefinitionIssues('shell', { name: 'x' })).toEqual([
      { path: [], message: expect.stringContaining('shell cannot run as an agentDefinition') },
    ]);
    expect(agentDefinitionIssues('codex', { name: 'x', tools: ['Read'] }).map((i) => i.path)).toEqual([
      ['tools'],
    ]);
    // Every agent either runs definitions or refuses them whole.
    for (const agent of AGENT_KINDS) {
      const whole = agentDefinitionIssues(agent, { name: 'x' });
      expect(whole.length, agent).toBe(
        (AGENT_DEFINITION_AGENTS as readonly string[]).includes(agent) ? 0 : 1,
      );
    }
    expect(Object.keys(AGENT_DEFINITION_ONLY_FIELDS).sort()).toEqual([
      'disallowedTools',
      'maxTokens',
      'tools',
    ]);
  });
});
