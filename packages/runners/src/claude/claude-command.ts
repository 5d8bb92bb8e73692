import { randomUUID } from 'node:crypto';
import type { TaskSpec } from '@agentbox/protocol';
import { foldContext, promptWithTranscript, unique } from '../shared.js';
import type { AgentCommand, GuestFile, RunnerContext } from '../types.js';
import { claudeAgentMarkdown, claudeAgentPath } from './claude-library.js';
import { claudeSessionPath, replayTranscript } from './claude-session.js';

/**
 * `claude -p` in stream-json mode, prompt on stdin (no argv length limit, and a prompt that starts
 * with `-` is not taken for a flag). Verified flags of the pinned 2.1.330: see the package README.
 */

/** Quiet, non-interactive and allowed to bypass permissions as root (the box is the sandbox). */
export const CLAUDE_ENV: Readonly<Record<string, string>> = {
  IS_SANDBOX: '1',
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
  DISABLE_AUTOUPDATER: '1',
};

/**
 * The built-in tool names of an allow list (`Bash(git *)` → `Bash`); MCP tools (`mcp__…`) are not
 * built-in and stay available.
 */
export function builtinToolNames(tools: readonly string[]): string[] {
  return unique(
    tools
      .filter((tool) => !tool.startsWith('mcp__'))
      .map((tool) => tool.replace(/\(.*$/s, '').trim())
      .filter((tool) => tool !== ''),
  );
}

export interface ClaudeCommandOptions {
  /** Session ids for replayed context; default crypto.randomUUID. */
  newSessionId?: () => string;
  now?: Date;
}

export function claudeCommand(
  spec: TaskSpec,
  ctx: RunnerContext,
  options: ClaudeCommandOptions = {},
): AgentCommand {
  const argv = [
    'claude',
    '-p',
    '--output-format',
    'stream-json',
    '--verbose',
    '--dangerously-skip-permissions',
  ];
  const env: Record<string, string> = { ...CLAUDE_ENV };
  const files: GuestFile[] = [];

  if (spec.model !== undefined) argv.push('--model', spec.model);
  argv.push('--effort', spec.effort);

  const def = ctx.agentDefinition;
  if (def !== undefined) {
    // The task runs as this agent: its prompt is the system prompt, its tools and model apply.
    files.push({ path: claudeAgentPath(ctx.home, def.name), content: claudeAgentMarkdown(def) });
    argv.push('--agent', def.name);
    if (def.maxTokens !== undefined) env.CLAUDE_CODE_MAX_OUTPUT_TOKENS = String(def.maxTokens);
  }

  // --allowedTools only pre-approves, which bypass mode makes moot; --tools is what narrows the set.
  if (spec.allowedTools !== undefined && spec.allowedTools.length > 0) {
    argv.push(`--tools=${builtinToolNames(spec.allowedTools).join(',')}`);
    argv.push(`--allowedTools=${spec.allowedTools.join(',')}`);
  }
  const denied = unique([...(spec.disallowedTools ?? []), ...(def?.disallowedTools ?? [])]);
  if (denied.length > 0) argv.push(`--disallowedTools=${denied.join(',')}`);

  if (spec.maxSpendUsd !== undefined) argv.push('--max-budget-usd', String(spec.maxSpendUsd));

  let prompt = spec.prompt;
  if (ctx.resumeSessionId !== undefined) {
    argv.push('--resume', ctx.resumeSessionId);
  } else if (spec.context !== undefined && spec.context.length > 0) {
    const { turns, pending } = foldContext(spec.context);
    const sessionId = (options.newSessionId ?? randomUUID)();
    const path = claudeSessionPath(ctx.home, ctx.cwd, sessionId);
    if (turns.length === 0) {
      prompt = [...pending, spec.prompt].join('\n\n');
    } else if (path !== undefined) {
      const replay = replayTranscript({
        sessionId,
        cwd: ctx.cwd,
        turns,
        ...(options.now ? { now: options.now } : {}),
      });
      files.push({ path, content: replay });
      argv.push('--resume', sessionId);
      prompt = [...pending, spec.prompt].join('\n\n');
    } else {
      prompt = promptWithTranscript(spec.context, spec.prompt);
    }
  }

  Object.assign(env, spec.envVars);
  return { argv, env, cwd: ctx.cwd, stdin: prompt, files };
}
