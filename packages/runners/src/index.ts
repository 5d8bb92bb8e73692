export type {
  AgentCommand,
  AgentExit,
  AgentOutcome,
  AgentRunner,
  GuestFile,
  ResolvedLibraryItem,
  RunnerContext,
  StreamParser,
  TaskEventDraft,
} from './types.js';
