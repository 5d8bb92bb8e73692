import type { AgentDefinition, AgentKind, LibraryKind, TaskEventType, TaskSpec } from '@agentbox/protocol';

/** Where the task runs inside the box, as the host resolved it. */
export interface RunnerContext {
  /** Absolute guest path the agent works in (the workspace, or the cloned repo inside it). */
  cwd: string;
  /** The guest user's home (`/root`). */
  home: string;
  /** The resolved agent definition (inline or from the library), if any. */
  agentDefinition?: AgentDefinition;
  /**
   * The agent session to continue (a Claude session id, a Codex thread id, an OpenCode session
   * id): the spec's `resume`, or the host's record of the box's last session for seed-API calls.
   * Undefined: a new session (seeded from `spec.context` when given).
   */
  resumeSessionId?: string;
}

/** A file the runner needs in the guest before the command runs (config, replayed session). */
export interface GuestFile {
  /** Absolute guest path. */
  path: string;
  content: string;
  mode?: number;
}

/** What to run in the guest. The host adds the box env (proxy, CA, credential placeholders). */
export interface AgentCommand {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  /** Bytes for the agent's stdin (then closed); undefined leaves stdin empty. */
  stdin?: string;
  files: GuestFile[];
}

/** A TaskEvent before the host numbers and timestamps it. */
export interface TaskEventDraft {
  type: TaskEventType;
  content: unknown;
  raw?: string;
}

/** How the agent process ended, as the guest reported it. */
export interface AgentExit {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  /** The last few KiB of stderr, for an error event when the agent failed without saying why. */
  stderrTail: string;
}

/**
 * The closed set of `code`s in `error` events (and in AgentOutcome.error):
 * - `timed_out`: the host killed the agent at the task timeout;
 * - `no_result`: the agent exited without its final result line (crash, kill, bad flags);
 * - `agent_error`: the agent reported that the run failed (max turns, execution error, …);
 * - `api_error`: the model API answered with an error (the agent may retry or give up);
 * - `budget_exceeded`: the run hit `maxSpendUsd`;
 * - `exit_nonzero`: a `shell` task's script exited with a non-zero status.
 */
export const AGENT_ERROR_CODES = [
  'timed_out',
  'no_result',
  'agent_error',
  'api_error',
  'budget_exceeded',
  'exit_nonzero',
] as const;
export type AgentErrorCode = (typeof AGENT_ERROR_CODES)[number];

/** Content of an `error` event. */
export interface AgentErrorContent {
  code: AgentErrorCode;
  message: string;
  [detail: string]: unknown;
}

/** What the final `result` line (or the exit) says about the run. */
export interface AgentOutcome {
  ok: boolean;
  sessionId: string | null;
  numTurns: number | null;
  costUsd: number | null;
  usage: Record<string, unknown> | null;
  text: string | null;
  /** Why the run failed (the last error event's code and message); null when ok. */
  error: { code: AgentErrorCode; message: string } | null;
}

/** Parses one run's stdout, line by line, into events. */
export interface StreamParser {
  /** One complete stdout line (no newline). Unknown or malformed lines become events too, never lost. */
  line(text: string): TaskEventDraft[];
  /** The process ended: closing events (a completion if the agent printed none, or an error). */
  end(exit: AgentExit): TaskEventDraft[];
  outcome(): AgentOutcome;
}

/**
 * A library item as the host resolved it (project over `_global`): its files by relative path.
 * Layout per kind: skill → `SKILL.md` (+ any files); agent → `agent.json` (an AgentDefinition);
 * mcp → `mcp.json` (`{mcpServers: {…}}`); hooks → `hooks.json` (`{hooks: {…}}`);
 * settings → `settings.json`; rules → `RULES.md`.
 */
export interface ResolvedLibraryItem {
  kind: LibraryKind;
  namespace: string;
  name: string;
  sha256: string;
  files: Record<string, string>;
}

export interface AgentRunner {
  readonly kind: AgentKind;
  command(spec: TaskSpec, ctx: RunnerContext): AgentCommand;
  parser(): StreamParser;
  /** The guest files that make the library items visible to this agent (skills, agents, MCP, …). */
  materialize(items: ResolvedLibraryItem[], ctx: RunnerContext): GuestFile[];
}
