import type { ContextMessage } from '@agentbox/protocol';
import type { AgentErrorCode, AgentErrorContent, AgentOutcome, TaskEventDraft } from './types.js';

/** Pieces every adapter uses: JSON lines, events, outcomes, context folding. */

export type JsonObject = Record<string, unknown>;

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Longest line parsed as JSON. What an agent prints is the guest's: a line of megabytes of nesting or
 * keys takes the daemon's one thread seconds to parse and cut, and a stored event keeps 256 KiB of
 * it anyway. The agents' own lines (a result, a tool call) are far shorter.
 */
export const MAX_PARSED_LINE_CHARS = 1024 * 1024;

/**
 * The line as a JSON object, or undefined when it is not one, or is longer than
 * MAX_PARSED_LINE_CHARS (then it becomes an `unparsed` status).
 */
export function parseJsonObject(line: string): JsonObject | undefined {
  if (line.length > MAX_PARSED_LINE_CHARS) return undefined;
  const trimmed = line.trim();
  if (!trimmed.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(trimmed);
    return isObject(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

export function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

export function num(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/**
 * Attaches the source line to the first event made from it: the line is stored once, and the
 * events after it in the same line (a tool_result after its tool_use) point at it by order.
 */
export function withRaw(events: TaskEventDraft[], raw: string): TaskEventDraft[] {
  const first = events[0];
  if (first !== undefined) events[0] = { ...first, raw };
  return events;
}

/** A line that is not JSON (or not an object): kept whole as a status event, never dropped. */
export function unparsed(line: string): TaskEventDraft[] {
  return [{ type: 'status', content: { state: 'unparsed' }, raw: line }];
}

export function errorEvent(code: AgentErrorCode, message: string, details: JsonObject = {}): TaskEventDraft {
  const content: AgentErrorContent = { ...details, code, message };
  return { type: 'error', content };
}

export function emptyOutcome(): AgentOutcome {
  return { ok: false, sessionId: null, numTurns: null, costUsd: null, usage: null, text: null, error: null };
}

/** The error event of a run that ended without saying how: timed out, or exited before its result. */
export function exitError(
  agent: string,
  exit: { exitCode: number | null; signal: string | null; timedOut: boolean; stderrTail: string },
): TaskEventDraft {
  if (exit.timedOut) return errorEvent('timed_out', `${agent} ran past the task timeout and was killed`);
  const how =
    exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${exit.exitCode ?? 'unknown'}`;
  const stderr = exit.stderrTail.trim();
  return errorEvent(
    'no_result',
    `${agent} ${how} before its final result${stderr === '' ? '' : `: ${lastLines(stderr, 20)}`}`,
    {
      exitCode: exit.exitCode,
      signal: exit.signal,
    },
  );
}

export function lastLines(text: string, count: number): string {
  return text.split('\n').slice(-count).join('\n');
}

/** The last `max` characters of `text` (for outcome texts built from unbounded output). */
export function tailChars(text: string, max: number): string {
  return text.length <= max ? text : text.slice(text.length - max);
}

/** How deep `addUsage` merges: usage objects are two levels deep; the guest decides the rest. */
const USAGE_DEPTH = 4;

/**
 * Adds numeric fields of `add` into `into` (token counters); other fields are overwritten. Both
 * come from the agent's output, so the merge stops at a fixed depth (deeper objects replace) and
 * skips `__proto__`.
 */
export function addUsage(into: JsonObject, add: JsonObject, depth = 0): JsonObject {
  for (const [key, value] of Object.entries(add)) {
    if (key === '__proto__') continue;
    const before = into[key];
    if (typeof value === 'number' && typeof before === 'number') into[key] = before + value;
    else if (depth < USAGE_DEPTH && isObject(value) && isObject(before))
      into[key] = addUsage({ ...before }, value, depth + 1);
    else into[key] = value;
  }
  return into;
}

/**
 * Context messages as alternating turns that start with the user: consecutive messages of one
 * role are joined, a leading assistant message gets an empty-handed user turn before it, and
 * trailing user messages are split off (`pending`) so the caller can put them before the prompt.
 */
export function foldContext(context: readonly ContextMessage[]): {
  turns: ContextMessage[];
  pending: string[];
} {
  const turns: ContextMessage[] = [];
  for (const message of context) {
    const last = turns[turns.length - 1];
    if (last !== undefined && last.role === message.role)
      last.content = `${last.content}\n\n${message.content}`;
    else turns.push({ ...message });
  }
  if (turns[0]?.role === 'assistant') turns.unshift({ role: 'user', content: '(earlier conversation)' });
  const pending: string[] = [];
  if (turns[turns.length - 1]?.role === 'user') pending.push(turns.pop()!.content);
  return { turns, pending };
}

/**
 * For agents whose sessions cannot be seeded from outside: the prior messages as a transcript
 * in front of the prompt, in tags the model can tell from the new request.
 */
export function promptWithTranscript(context: readonly ContextMessage[] | undefined, prompt: string): string {
  if (context === undefined || context.length === 0) return prompt;
  const lines = context.map((m) => `<${m.role}>\n${m.content}\n</${m.role}>`);
  return [
    'The conversation so far (replayed from an earlier session):',
    '<conversation>',
    ...lines,
    '</conversation>',
    '',
    'Continue it. The new message from the user:',
    '',
    prompt,
  ].join('\n');
}

/** Deep merge of JSON objects: objects merge key by key, arrays concatenate, anything else is replaced. */
export function mergeJson(into: JsonObject, add: JsonObject): JsonObject {
  for (const [key, value] of Object.entries(add)) {
    const before = into[key];
    if (isObject(before) && isObject(value)) into[key] = mergeJson({ ...before }, value);
    else if (Array.isArray(before) && Array.isArray(value))
      into[key] = [...(before as unknown[]), ...(value as unknown[])];
    else into[key] = value;
  }
  return into;
}

/** A YAML scalar for frontmatter: a JSON string is a valid double-quoted YAML scalar. */
export function yamlString(value: string): string {
  return JSON.stringify(value);
}

export function yamlList(values: readonly string[]): string {
  return `[${values.map(yamlString).join(', ')}]`;
}

export function joinPath(...parts: string[]): string {
  return parts.join('/').replace(/\/+/g, '/');
}

/** Unique values in first-seen order. */
export function unique<T>(values: Iterable<T>): T[] {
  return [...new Set(values)];
}
