export type {
  AgentCommand,
  AgentExit,
  AgentOutcome,
  AgentRunner,
  GuestFile,
  RunnerContext,
  StreamParser,
  TaskEventDraft,
} from './types.js';
