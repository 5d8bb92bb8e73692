import {
  emptyOutcome,
  errorEvent,
  exitError,
  isObject,
  num,
  parseJsonObject,
  str,
  unparsed,
  withRaw,
  type JsonObject,
} from '../shared.js';
import type { AgentExit, AgentOutcome, StreamParser, TaskEventDraft } from '../types.js';

/**
 * Claude Code's stream-json (`-p --output-format stream-json --verbose`), as 2.1.330 prints it:
 * - `system`/`init` → status {state:'started', sessionId, model, tools, cwd, version};
 * - `assistant`: each content block → text (string) | tool_use {id,name,input} | status
 *   {state:'thinking'}; an API error the CLI reports as a synthetic assistant message
 *   (`is_api_error_message`) → error {code:'api_error', status};
 * - `user`: each tool_result block → tool_result {toolUseId, content, isError};
 * - `result` → completion (the result text) or, when `is_error`, error {code:'agent_error' |
 *   'budget_exceeded', subtype}; it also fills the outcome (session, turns, cost, usage);
 * - anything else that is JSON → status {state:'progress', kind}; a non-JSON line → status
 *   {state:'unparsed'}. The source line is the first event's `raw` in every case.
 */

function toolResultContent(content: unknown): unknown {
  if (typeof content === 'string') return content;
  if (
    Array.isArray(content) &&
    content.every((b) => isObject(b) && b.type === 'text' && typeof b.text === 'string')
  ) {
    return content.map((b) => (b as { text: string }).text).join('\n');
  }
  return content ?? '';
}

function assistantEvents(line: JsonObject): TaskEventDraft[] {
  const message = isObject(line.message) ? line.message : {};
  const blocks = Array.isArray(message.content) ? message.content : [];
  if (line.is_api_error_message === true) {
    const text = blocks.map((b) => (isObject(b) ? (str(b.text) ?? '') : '')).join('\n');
    return [
      errorEvent('api_error', text || 'the model API answered with an error', {
        status: line.api_error_status ?? null,
      }),
    ];
  }
  const parent = str(line.parent_tool_use_id);
  const events: TaskEventDraft[] = [];
  for (const block of blocks) {
    if (!isObject(block)) continue;
    if (block.type === 'text') events.push({ type: 'text', content: str(block.text) ?? '' });
    else if (block.type === 'tool_use') {
      events.push({
        type: 'tool_use',
        content: {
          id: str(block.id) ?? '',
          name: str(block.name) ?? '',
          input: block.input ?? {},
          ...(parent ? { parentToolUseId: parent } : {}),
        },
      });
    } else if (block.type === 'thinking')
      events.push({ type: 'status', content: { state: 'thinking', text: str(block.thinking) ?? '' } });
    else
      events.push({
        type: 'status',
        content: { state: 'progress', kind: `assistant/${str(block.type) ?? 'unknown'}` },
      });
  }
  return events;
}

function userEvents(line: JsonObject): TaskEventDraft[] {
  const message = isObject(line.message) ? line.message : {};
  const blocks = Array.isArray(message.content) ? message.content : [];
  const events: TaskEventDraft[] = [];
  for (const block of blocks) {
    if (isObject(block) && block.type === 'tool_result') {
      events.push({
        type: 'tool_result',
        content: {
          toolUseId: str(block.tool_use_id) ?? '',
          content: toolResultContent(block.content),
          isError: block.is_error === true,
        },
      });
    }
  }
  return events;
}

export function claudeParser(): StreamParser {
  const outcome: AgentOutcome = emptyOutcome();
  let sawResult = false;

  function resultEvents(line: JsonObject): TaskEventDraft[] {
    sawResult = true;
    outcome.sessionId = str(line.session_id) ?? outcome.sessionId;
    outcome.numTurns = num(line.num_turns) ?? null;
    outcome.costUsd = num(line.total_cost_usd) ?? null;
    outcome.usage = isObject(line.usage) ? line.usage : null;
    const text = str(line.result) ?? null;
    outcome.text = text;
    const subtype = str(line.subtype) ?? 'unknown';
    if (line.is_error !== true && subtype === 'success') {
      outcome.ok = true;
      outcome.error = null;
      return [{ type: 'completion', content: text ?? '' }];
    }
    const errors = Array.isArray(line.errors)
      ? line.errors.filter((e): e is string => typeof e === 'string')
      : [];
    const message = text ?? (errors.join('; ') || `the run ended with ${subtype}`);
    const code = subtype === 'error_max_budget_usd' ? 'budget_exceeded' : 'agent_error';
    outcome.ok = false;
    outcome.error = { code, message };
    return [errorEvent(code, message, { subtype })];
  }

  function events(line: JsonObject): TaskEventDraft[] {
    switch (line.type) {
      case 'system':
        if (line.subtype === 'init') {
          outcome.sessionId = str(line.session_id) ?? null;
          return [
            {
              type: 'status',
              content: {
                state: 'started',
                sessionId: outcome.sessionId,
                model: str(line.model) ?? null,
                tools: Array.isArray(line.tools) ? line.tools : [],
                cwd: str(line.cwd) ?? null,
                version: str(line.claude_code_version) ?? null,
              },
            },
          ];
        }
        return [
          {
            type: 'status',
            content: { state: 'progress', kind: `system/${str(line.subtype) ?? 'unknown'}` },
          },
        ];
      case 'assistant': {
        const out = assistantEvents(line);
        const error = out.find((e) => e.type === 'error');
        if (error !== undefined) {
          const content = error.content as { code: 'api_error'; message: string };
          outcome.error = { code: content.code, message: content.message };
        }
        return out;
      }
      case 'user':
        return userEvents(line);
      case 'result':
        return resultEvents(line);
      default:
        return [{ type: 'status', content: { state: 'progress', kind: str(line.type) ?? 'unknown' } }];
    }
  }

  return {
    line(text) {
      if (text.trim() === '') return [];
      const json = parseJsonObject(text);
      if (json === undefined) return unparsed(text);
      const out = events(json);
      // A line that carried nothing we map (a user line with only text) still keeps its raw.
      return withRaw(
        out.length > 0
          ? out
          : [{ type: 'status', content: { state: 'progress', kind: str(json.type) ?? 'unknown' } }],
        text,
      );
    },
    end(exit: AgentExit) {
      if (sawResult && !exit.timedOut) return [];
      const event = exitError('claude', exit);
      const content = event.content as { code: 'timed_out' | 'no_result'; message: string };
      outcome.ok = false;
      outcome.error = { code: content.code, message: content.message };
      return [event];
    },
    outcome: () => ({ ...outcome }),
  };
}
