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
 * `opencode run --format json` events (1.18.33), one JSON object a line with a `part`:
 * - first line's `sessionID` → status {state:'started', sessionId} before its own events;
 * - `text` → text; `reasoning` → status {state:'thinking'};
 * - `tool_use` (printed once the tool finished) → tool_use {id: callID, name, input} and
 *   tool_result {toolUseId, content: output | error, isError};
 * - `step_start` / `step_finish` → status {state:'progress', kind, …}; each finished step counts as a
 *   turn, its tokens and cost add up in the outcome;
 * - `error` → error {code:'api_error' (APIError) | 'agent_error'};
 * - no result line: a clean exit after no error → completion (the last text).
 */

function toolEvents(part: JsonObject): TaskEventDraft[] {
  const state = isObject(part.state) ? part.state : {};
  const id = str(part.callID) ?? str(part.id) ?? '';
  const use: TaskEventDraft = {
    type: 'tool_use',
    content: { id, name: str(part.tool) ?? '', input: state.input ?? {} },
  };
  const status = str(state.status);
  if (status !== 'completed' && status !== 'error') return [use];
  const isError = status === 'error';
  const content = isError ? (str(state.error) ?? 'tool failed') : (state.output ?? '');
  return [use, { type: 'tool_result', content: { toolUseId: id, content, isError } }];
}

export function opencodeParser(): StreamParser {
  const outcome: AgentOutcome = emptyOutcome();
  let lastText: string | null = null;
  let failed = false;
  let cost = 0;

  function events(line: JsonObject): TaskEventDraft[] {
    const out: TaskEventDraft[] = [];
    const sessionId = str(line.sessionID);
    if (outcome.sessionId === null && sessionId !== undefined) {
      outcome.sessionId = sessionId;
      out.push({ type: 'status', content: { state: 'started', sessionId } });
    }
    const part = isObject(line.part) ? line.part : {};
    const type = str(line.type) ?? 'unknown';
    switch (type) {
      case 'text':
        lastText = str(part.text) ?? '';
        out.push({ type: 'text', content: lastText });
        break;
      case 'reasoning':
        out.push({ type: 'status', content: { state: 'thinking', text: str(part.text) ?? '' } });
        break;
      case 'tool_use':
        out.push(...toolEvents(part));
        break;
      case 'step_finish': {
        outcome.numTurns = (outcome.numTurns ?? 0) + 1;
        const stepCost = num(part.cost);
        if (stepCost !== undefined) cost += stepCost;
        if (isObject(part.tokens)) outcome.usage = addUsage(outcome.usage ?? {}, part.tokens);
        out.push({
          type: 'status',
          content: {
            state: 'progress',
            kind: type,
            reason: str(part.reason) ?? null,
            tokens: part.tokens ?? null,
            cost: stepCost ?? null,
          },
        });
        break;
      }
      case 'error': {
        const error = isObject(line.error) ? line.error : {};
        const data = isObject(error.data) ? error.data : {};
        const message = str(data.message) ?? str(error.name) ?? 'opencode reported an error';
        const code = error.name === 'APIError' ? 'api_error' : 'agent_error';
        failed = true;
        outcome.error = { code, message };
        out.push(
          errorEvent(code, message, {
            name: str(error.name) ?? null,
            ...(num(data.statusCode) === undefined ? {} : { status: data.statusCode }),
          }),
        );
        break;
      }
      default:
        out.push({ type: 'status', content: { state: 'progress', kind: type } });
    }
    return out;
  }

  return {
    line(text) {
      if (text.trim() === '') return [];
      const json = parseJsonObject(text);
      return json === undefined ? unparsed(text) : withRaw(events(json), text);
    },
    end(exit: AgentExit) {
      outcome.costUsd = outcome.numTurns === null ? null : cost;
      outcome.text = lastText;
      if (!failed && !exit.timedOut && exit.exitCode === 0) {
        outcome.ok = true;
        return [{ type: 'completion', content: lastText ?? '' }];
      }
      outcome.ok = false;
      if (failed && !exit.timedOut) return [];
      const event = exitError('opencode', exit);
      const content = event.content as { code: 'timed_out' | 'no_result'; message: string };
      outcome.error = { code: content.code, message: content.message };
      return [event];
    },
    outcome: () => ({ ...outcome, usage: outcome.usage === null ? null : { ...outcome.usage } }),
  };
}
