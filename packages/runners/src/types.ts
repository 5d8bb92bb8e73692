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
   * The Claude session to continue: the spec's `resume`, or the host's record of the box's last
   * session for seed-API calls. Undefined: a new session.
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

/** What the final `result` line (or the exit) says about the run. */
export interface AgentOutcome {
  ok: boolean;
  sessionId: string | null;
  numTurns: number | null;
  costUsd: number | null;
  usage: Record<string, unknown> | null;
  text: string | null;
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
