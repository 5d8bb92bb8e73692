import { SESSION_ID_PATTERN, type TaskEvent, type TaskResult } from '@agentbox/protocol';

/**
 * What the daemon keeps of an agent's output. Everything an agent prints is the guest's, so it is
 * bounded twice: each stored event is cut to MAX_EVENT_FIELD_BYTES per field, and a task's events
 * together to TaskOutputLimits. The functions here decide; task-service does the storing.
 */

/** Per-task caps on stored events; a task that passes one is stopped and fails `output_limit`. */
export interface TaskOutputLimits {
  /** Bytes of a task's stored events (each one's `content` as JSON plus its `raw`). */
  maxBytes: number;
  /** Number of a task's stored events. */
  maxEvents: number;
}

/**
 * Room for long sessions: each event counts twice (content and raw), and Claude Code's stream
 * repeats every tool result, so a file read is stored 2–3 times; a runaway agent still stops here.
 */
export const DEFAULT_TASK_OUTPUT_LIMITS: Readonly<TaskOutputLimits> = {
  maxBytes: 256 * 1024 * 1024,
  maxEvents: 100_000,
};

/** The code a task fails with when its output passes a cap (and its final error event's code). */
export const OUTPUT_LIMIT_CODE = 'output_limit';

/** Longest `raw`, and longest `content` as JSON, a stored event keeps (UTF-8 bytes); the rest is cut. */
export const MAX_EVENT_FIELD_BYTES = 256 * 1024;

/**
 * Kept free under the caps for the events the daemon adds itself once the agent's are refused
 * (the final error), so a task's log never passes them.
 */
export const OUTPUT_RESERVE: Readonly<TaskOutputLimits> = { maxBytes: 64 * 1024, maxEvents: 16 };

/** A result's `usage` and error message longer than these are not the agent's to keep. */
const MAX_USAGE_BYTES = 64 * 1024;
export const MAX_ERROR_MESSAGE_BYTES = 16 * 1024;

export type EventDraft = Omit<TaskEvent, 'seq' | 'ts'>;

export function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** The longest prefix of `text` that is at most `maxBytes` in UTF-8, never splitting a character. */
export function cutUtf8(text: string, maxBytes: number): string {
  // Each UTF-16 unit is at least one UTF-8 byte: this many units hold every byte that could be kept.
  if (text.length <= maxBytes / 3 || utf8Bytes(text) <= maxBytes) return text;
  const bytes = Buffer.from(text.slice(0, maxBytes), 'utf8');
  if (bytes.length <= maxBytes) return bytes.toString('utf8');
  let end = maxBytes;
  // A continuation byte (10xxxxxx) at the cut: back off to where its character starts.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

/** JSON as the store writes it; undefined when the value cannot be written (nested too deep). */
function jsonOf(value: unknown): string | undefined {
  try {
    return JSON.stringify(value ?? null);
  } catch {
    return undefined;
  }
}

/** Longest object key kept: a key is a name, not a place for data. */
const MAX_KEY_BYTES = 1024;

/** Cuts every string to `maxString` bytes, every array and object to `maxItems`, nesting to `depth`. */
function shrink(value: unknown, maxString: number, maxItems: number, depth: number): unknown {
  if (typeof value === 'string') return cutUtf8(value, maxString);
  if (value === null || typeof value !== 'object') return value;
  if (depth === 0) return null;
  if (Array.isArray(value))
    return value.slice(0, maxItems).map((v) => shrink(v, maxString, maxItems, depth - 1));
  // The first `maxItems` keys only: an object of a million keys is not walked whole at each step.
  const out: Record<string, unknown> = {};
  let kept = 0;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (kept++ >= maxItems) break;
    out[cutUtf8(key, Math.min(maxString, MAX_KEY_BYTES))] = shrink(
      (value as Record<string, unknown>)[key],
      maxString,
      maxItems,
      depth - 1,
    );
  }
  return out;
}

/**
 * Ever harder cuts. The first keeps one long string (a text event, a tool result) almost whole,
 * beside up to 1 KiB of the rest; the next share the limit among more strings, then cut wide and
 * deep structures too.
 */
const SHRINK_STEPS: readonly { stringBytes: (limit: number) => number; maxItems: number; depth: number }[] = [
  { stringBytes: (limit) => limit - 1024, maxItems: 10_000, depth: 64 },
  { stringBytes: (limit) => limit / 8, maxItems: 1000, depth: 32 },
  { stringBytes: (limit) => limit / 64, maxItems: 100, depth: 16 },
  { stringBytes: (limit) => limit / 1024, maxItems: 10, depth: 8 },
];

/**
 * `content` whose JSON is at most `maxBytes`, with `bytes` its JSON's size. Too big, it keeps its
 * shape with its strings, lists and nesting cut down; what no such cut brings under the limit
 * (a vast structure of small values) becomes the start of its JSON text.
 */
export function cutContent(
  content: unknown,
  maxBytes: number,
): { content: unknown; bytes: number; cut: boolean } {
  const json = jsonOf(content);
  if (json !== undefined) {
    const bytes = utf8Bytes(json);
    if (bytes <= maxBytes) return { content, bytes, cut: false };
  }
  let last: string | undefined;
  for (const step of SHRINK_STEPS) {
    const maxString = Math.max(1, Math.floor(step.stringBytes(maxBytes)));
    const shrunk = shrink(content, maxString, step.maxItems, step.depth);
    last = jsonOf(shrunk);
    if (last === undefined) continue;
    const bytes = utf8Bytes(last);
    if (bytes <= maxBytes) return { content: shrunk, bytes, cut: true };
  }
  // A string's JSON is at most 6 bytes per byte of it (\u0000): this one fits.
  const text = cutUtf8(last ?? '', Math.max(0, Math.floor((maxBytes - 2) / 6)));
  return { content: text, bytes: utf8Bytes(JSON.stringify(text)), cut: true };
}

/**
 * The event as stored: `raw` and `content` each cut to `maxFieldBytes`, `truncated` set when
 * either was. `bytes` is what it adds to the task's stored bytes.
 */
export function cutEvent(
  draft: EventDraft,
  maxFieldBytes: number = MAX_EVENT_FIELD_BYTES,
): { event: EventDraft; bytes: number } {
  const content = cutContent(draft.content, maxFieldBytes);
  const raw = draft.raw === undefined ? undefined : cutUtf8(draft.raw, maxFieldBytes);
  const truncated = content.cut || (raw !== undefined && raw.length !== draft.raw!.length);
  const event: EventDraft = {
    type: draft.type,
    content: content.content,
    ...(raw === undefined ? {} : { raw }),
    ...(truncated ? { truncated: true } : {}),
  };
  return { event, bytes: content.bytes + (raw === undefined ? 0 : utf8Bytes(raw)) };
}

export type OutputLimitKind = 'bytes' | 'events' | 'read';

/**
 * Bytes of output read from the agent, stored or not, per byte of `maxBytes`: what is parsed costs
 * the daemon's time even when little of it is kept (a line of a million keys is stored cut).
 */
export const READ_BYTES_PER_STORED_BYTE = 4;

/**
 * A task's running total against its caps, from what it had stored already. `admit` counts an
 * event that fits below the caps less OUTPUT_RESERVE; the first that does not closes the budget,
 * and from then on nothing is admitted (`exceeded` says which cap it was).
 */
export function createOutputBudget(limits: TaskOutputLimits, used: { bytes: number; events: number }) {
  let bytes = used.bytes;
  let events = used.events;
  let exceeded: OutputLimitKind | undefined;
  let read = 0;
  return {
    /** Counts `size` bytes read from the agent; false once they pass the cap (then `exceeded`). */
    read(size: number): boolean {
      read += size;
      if (!exceeded && read > limits.maxBytes * READ_BYTES_PER_STORED_BYTE) exceeded = 'read';
      return exceeded === undefined;
    },
    admit(size: number): boolean {
      if (exceeded) return false;
      if (events + 1 > limits.maxEvents - OUTPUT_RESERVE.maxEvents) exceeded = 'events';
      else if (bytes + size > limits.maxBytes - OUTPUT_RESERVE.maxBytes) exceeded = 'bytes';
      if (exceeded) return false;
      bytes += size;
      events += 1;
      return true;
    },
    get exceeded(): OutputLimitKind | undefined {
      return exceeded;
    },
    get used(): { bytes: number; events: number } {
      return { bytes, events };
    },
  };
}

export type OutputBudget = ReturnType<typeof createOutputBudget>;

function mib(bytes: number): string {
  const n = bytes / (1024 * 1024);
  return `${Number.isInteger(n) ? n : n.toFixed(2)} MiB`;
}

/** The final error's message: which cap the task passed. */
export function outputLimitMessage(limits: TaskOutputLimits, kind: OutputLimitKind): string {
  const cap =
    kind === 'bytes'
      ? `${mib(limits.maxBytes)} of stored events`
      : kind === 'events'
        ? `${limits.maxEvents} events`
        : `${mib(limits.maxBytes * READ_BYTES_PER_STORED_BYTE)} printed`;
  return `the agent's output passed the task's limit of ${cap}; the agent and its children were stopped`;
}

/**
 * The parts of a result and error the agent wrote, bounded like events: a stored task stays small
 * enough to be listed a page at a time. A `usage` or session id too long to be real is dropped.
 */
export function boundResult(result: TaskResult): TaskResult {
  const usage = result.usage && cutContent(result.usage, MAX_USAGE_BYTES);
  const sessionId = result.sessionId;
  const count = (n: number | null) => (n !== null && Number.isSafeInteger(n) && n >= 0 ? n : null);
  return {
    ...result,
    // Figures the agent printed: what the contract cannot hold (negative, fractional) is unknown.
    numTurns: count(result.numTurns),
    costUsd:
      result.costUsd !== null && Number.isFinite(result.costUsd) && result.costUsd >= 0
        ? result.costUsd
        : null,
    // Resumed later (`--resume`, a seed task's next turn): only an id a client could have sent.
    sessionId: sessionId !== null && SESSION_ID_PATTERN.test(sessionId) ? sessionId : null,
    text: result.text === null ? null : cutUtf8(result.text, MAX_EVENT_FIELD_BYTES),
    usage: usage && !usage.cut ? result.usage : null,
  };
}
