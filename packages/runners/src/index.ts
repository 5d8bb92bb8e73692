import type { AgentKind } from '@agentbox/protocol';
import { claudeRunner } from './claude/claude-runner.js';
import { codexRunner } from './codex/codex-runner.js';
import { opencodeRunner } from './opencode/opencode-runner.js';
import { shellRunner } from './shell/shell-runner.js';
import type { AgentRunner } from './types.js';

const RUNNERS: Record<AgentKind, AgentRunner> = {
  claude: claudeRunner,
  codex: codexRunner,
  opencode: opencodeRunner,
  shell: shellRunner,
};

/** The adapter of an agent kind. */
export function runnerFor(kind: AgentKind): AgentRunner {
  return RUNNERS[kind];
}

export { claudeRunner, codexRunner, opencodeRunner, shellRunner };
export { AGENT_ERROR_CODES } from './types.js';
export type {
  AgentCommand,
  AgentErrorCode,
  AgentErrorContent,
  AgentExit,
  AgentOutcome,
  AgentRunner,
  GuestFile,
  ResolvedLibraryItem,
  RunnerContext,
  StreamParser,
  TaskEventDraft,
} from './types.js';
