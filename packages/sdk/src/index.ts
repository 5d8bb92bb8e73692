export { AgentboxClient, Boxes, DEFAULT_URL, type ClientOpts, type Health } from './client.js';
export { Sandbox, BoxTasks, type SandboxCreateOpts, type ClientOpt, type EgressAudit } from './sandbox.js';
export { Commands, type CommandOpts, type CommandResult } from './commands.js';
export { Files, type FileData, type WriteResult } from './files.js';
export { Processes } from './processes.js';
export {
  Tasks,
  TaskRun,
  type TaskRequest,
  type BoxTaskRequest,
  type FollowOpts,
  type ReconnectOpts,
  type TaskListOpts,
  type TaskPage,
} from './tasks.js';
export { Library, type LibraryRefInput, type LibraryListOpts } from './library.js';
export { Keys, type CreateKeyOpts, type KeyGrantsInput } from './keys.js';
export type { RequestOpts } from './http.js';
export {
  AgentboxSdkError,
  ERROR_CLASSES,
  errorClassOf,
  type SdkErrorClass,
  type SdkErrorClassName,
  type SdkErrorOptions,
  InvalidRequestError,
  UnauthorizedError,
  ForbiddenError,
  BoxNotFoundError,
  FileNotFoundError,
  ProcessNotFoundError,
  TaskNotFoundError,
  LibraryItemNotFoundError,
  KeyNotFoundError,
  PathOutsideWorkspaceError,
  InvalidStateError,
  CapacityExhaustedError,
  ExecTimeoutError,
  GuestUnreachableError,
  GuestAgentRestartedError,
  GuestError,
  VmExitedError,
  VersionMismatchError,
  ImageMissingError,
  ImageInvalidError,
  PrerequisiteMissingError,
  BootFailedError,
  SnapshotFailedError,
  RouteNotFoundError,
  PayloadTooLargeError,
  UnsupportedMediaTypeError,
  NotImplementedError,
  DaemonUnreachableError,
  ShuttingDownError,
  InternalError,
} from './errors.js';
export type {
  Box,
  BoxState,
  EntryInfo,
  ProcessInfo,
  Task,
  TaskEvent,
  TaskState,
  TaskSpecInput,
  LibraryItem,
  LibraryItemSummary,
  LibraryKind,
  ErrorCode,
} from '@agentbox/protocol';
