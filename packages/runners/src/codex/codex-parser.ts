import {
  addUsage,
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
 * `codex exec --json` events (0.169.0):
 * - `thread.started` → status {state:'started', sessionId: thread_id};
 * - `item.started` of a tool item (command_execution, file_change, mcp_tool_call, web_search) →
 *   tool_use {id, name, input}; its `item.completed` → tool_result {toolUseId, content, isError}
 *   (a tool_use first when no start was seen);
 * - `item.completed` agent_message → text; reasoning → status {state:'thinking'}; error (a
 *   non-fatal notice such as a transport fallback) → status {state:'warning'};
 * - `turn.completed` → completion (the last agent message), usage summed into the outcome;
 * - `turn.failed` → error {code:'agent_error'}; a top-level `error` (retry notices) → status
 *   {state:'warning'};
 * - other JSON → status {state:'progress', kind}; non-JSON → status {state:'unparsed'}.
 * Codex reports no cost: outcome.costUsd stays null.
 */

const TOOL_ITEMS = new Set(['command_execution', 'file_change', 'mcp_tool_call', 'web_search']);

/** An MCP result's text blocks as one string; anything else (images, structured content) as it came. */
function mcpResultContent(result: unknown): unknown {
  if (!isObject(result) || !Array.isArray(result.content)) return result ?? '';
  const blocks = result.content;
  if (blocks.every((b) => isObject(b) && b.type === 'text' && typeof b.text === 'string')) {
    return blocks.map((b) => (b as { text: string }).text).join('\n');
  }
  return result;
}

function toolUse(item: JsonObject): TaskEventDraft {
  const id = str(item.id) ?? '';
  switch (item.type) {
    case 'command_execution':
      return {
        type: 'tool_use',
        content: { id, name: 'command_execution', input: { command: str(item.command) ?? '' } },
      };
    case 'file_change':
      return {
        type: 'tool_use',
        content: { id, name: 'file_change', input: { changes: item.changes ?? [] } },
      };
    case 'mcp_tool_call':
      return {
        type: 'tool_use',
        content: {
          id,
          name: `mcp__${str(item.server) ?? ''}__${str(item.tool) ?? ''}`,
          input: item.arguments ?? {},
        },
      };
    default:
      return {
        type: 'tool_use',
        content: { id, name: str(item.type) ?? 'tool', input: { query: item.query ?? null } },
      };
  }
}

function toolResult(item: JsonObject): TaskEventDraft {
  const toolUseId = str(item.id) ?? '';
  const failed = item.status === 'failed';
  switch (item.type) {
    case 'command_execution': {
      const exitCode = num(item.exit_code) ?? null;
      return {
        type: 'tool_result',
        content: {
          toolUseId,
          content: str(item.aggregated_output) ?? '',
          isError: failed || (exitCode !== null && exitCode !== 0),
          exitCode,
        },
      };
    }
    case 'file_change': {
      const changes = Array.isArray(item.changes) ? item.changes.filter(isObject) : [];
      const summary = changes.map((c) => `${str(c.kind) ?? 'change'} ${str(c.path) ?? ''}`).join('\n');
      return { type: 'tool_result', content: { toolUseId, content: summary, isError: failed } };
    }
    case 'mcp_tool_call': {
      const error = isObject(item.error) ? (str(item.error.message) ?? 'failed') : undefined;
      return {
        type: 'tool_result',
        content: {
          toolUseId,
          content: error ?? mcpResultContent(item.result),
          isError: failed || error !== undefined,
        },
      };
    }
    default:
      return { type: 'tool_result', content: { toolUseId, content: '', isError: failed } };
  }
}

export function codexParser(): StreamParser {
  const outcome: AgentOutcome = emptyOutcome();
  const started = new Set<string>();
  let lastMessage: string | null = null;
  let completed = false;

  function itemEvents(phase: 'started' | 'updated' | 'completed', item: JsonObject): TaskEventDraft[] {
    const type = str(item.type) ?? 'unknown';
    const id = str(item.id) ?? '';
    if (TOOL_ITEMS.has(type)) {
      if (phase === 'started') {
        started.add(id);
        return [toolUse(item)];
      }
      if (phase === 'completed')
        return started.has(id) ? [toolResult(item)] : [toolUse(item), toolResult(item)];
    }
    if (phase === 'completed') {
      if (type === 'agent_message') {
        lastMessage = str(item.text) ?? '';
        return [{ type: 'text', content: lastMessage }];
      }
      if (type === 'reasoning')
        return [{ type: 'status', content: { state: 'thinking', text: str(item.text) ?? '' } }];
      if (type === 'error')
        return [{ type: 'status', content: { state: 'warning', message: str(item.message) ?? '' } }];
    }
    return [{ type: 'status', content: { state: 'progress', kind: `item.${phase}/${type}` } }];
  }

  function events(line: JsonObject): TaskEventDraft[] {
    const type = str(line.type) ?? 'unknown';
    switch (type) {
      case 'thread.started':
        outcome.sessionId = str(line.thread_id) ?? null;
        return [{ type: 'status', content: { state: 'started', sessionId: outcome.sessionId } }];
      case 'item.started':
      case 'item.updated':
      case 'item.completed':
        return itemEvents(
          type.slice('item.'.length) as 'started' | 'updated' | 'completed',
          isObject(line.item) ? line.item : {},
        );
      case 'turn.completed':
        completed = true;
        outcome.ok = true;
        outcome.error = null;
        outcome.numTurns = (outcome.numTurns ?? 0) + 1;
        if (isObject(line.usage)) outcome.usage = addUsage(outcome.usage ?? {}, line.usage);
        outcome.text = lastMessage;
        return [{ type: 'completion', content: lastMessage ?? '' }];
      case 'turn.failed': {
        const message = (isObject(line.error) ? str(line.error.message) : undefined) ?? 'the turn failed';
        completed = true;
        outcome.ok = false;
        outcome.error = { code: 'agent_error', message };
        return [errorEvent('agent_error', message)];
      }
      case 'error':
        return [{ type: 'status', content: { state: 'warning', message: str(line.message) ?? '' } }];
      default:
        return [{ type: 'status', content: { state: 'progress', kind: type } }];
    }
  }

  return {
    line(text) {
      if (text.trim() === '') return [];
      const json = parseJsonObject(text);
      return json === undefined ? unparsed(text) : withRaw(events(json), text);
    },
    end(exit: AgentExit) {
      if (completed && !exit.timedOut) return [];
      const event = exitError('codex', exit);
      const content = event.content as { code: 'timed_out' | 'no_result'; message: string };
      outcome.ok = false;
      outcome.error = { code: content.code, message: content.message };
      return [event];
    },
    outcome: () => ({ ...outcome, usage: outcome.usage === null ? null : { ...outcome.usage } }),
  };
}
