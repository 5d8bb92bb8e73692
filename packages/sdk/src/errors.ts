import {
  AgentboxError,
  ERROR_CODE_LIST,
  httpStatusOf,
  isErrorCode,
  type AgentboxErrorOptions,
  type ErrorBody,
  type ErrorCode,
} from '@agentbox/protocol';

export interface SdkErrorOptions extends AgentboxErrorOptions {
  /** The daemon's id of the request (also in its log and the X-Request-Id header). */
  requestId?: string | undefined;
  /** The HTTP status actually received, when there was a response. */
  httpStatus?: number | undefined;
}

/**
 * Every error the SDK throws for a failed call: the daemon's error body (`code`, `message`,
 * `details`, `requestId`) or a client-side failure (`daemon_unreachable`). Extends protocol's
 * `AgentboxError`, so code that handles those handles these.
 */
export class AgentboxSdkError extends AgentboxError {
  readonly requestId: string | undefined;
  readonly httpStatus: number | undefined;

  constructor(code: ErrorCode, message: string, options: SdkErrorOptions = {}) {
    super(code, message, options);
    this.requestId = options.requestId;
    this.httpStatus = options.httpStatus;
  }

  /** The HTTP status: the one received, else the registry's for the code. */
  override get status(): number {
    return this.httpStatus ?? httpStatusOf(this.code);
  }

  /** The first invalid field named by the daemon (`invalid_request`), e.g. `memoryMib` or `path`. */
  get field(): string | undefined {
    const issues = this.details?.issues;
    if (!Array.isArray(issues)) return undefined;
    const first = issues[0] as { field?: unknown } | undefined;
    return typeof first?.field === 'string' ? first.field : undefined;
  }
}

/** `box_not_found` → `BoxNotFound`. */
type Pascal<S extends string> = S extends `${infer Head}_${infer Tail}`
  ? `${Capitalize<Head>}${Pascal<Tail>}`
  : Capitalize<S>;

/** The class of one error code: `new BoxNotFoundError(message)` has `code === 'box_not_found'`. */
export interface SdkErrorClass<C extends ErrorCode = ErrorCode> {
  new (message: string, options?: SdkErrorOptions): AgentboxSdkError & { readonly code: C };
  readonly code: C;
  readonly prototype: AgentboxSdkError;
}

/** `box_not_found` → `BoxNotFoundError`; `guest_error` → `GuestError`. */
export type SdkErrorClassName<C extends ErrorCode = ErrorCode> =
  Pascal<C> extends `${string}Error` ? Pascal<C> : `${Pascal<C>}Error`;

/** The class name of a code, as SdkErrorClassName spells it. */
export function errorClassName(code: string): string {
  const pascal = code
    .split('_')
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1))
    .join('');
  return pascal.endsWith('Error') ? pascal : `${pascal}Error`;
}

function defineErrorClass<C extends ErrorCode>(code: C): SdkErrorClass<C> {
  const name = errorClassName(code);
  // A computed key names the class, so `err.name` is e.g. 'BoxNotFoundError'.
  const holder = {
    [name]: class extends AgentboxSdkError {
      static readonly code = code;
      constructor(message: string, options: SdkErrorOptions = {}) {
        super(code, message, options);
      }
    },
  };
  return holder[name] as unknown as SdkErrorClass<C>;
}

/** One class per code of the protocol's registry, made when this module loads. */
export const ERROR_CLASSES = Object.fromEntries(
  ERROR_CODE_LIST.map((code) => [code, defineErrorClass(code)]),
) as { readonly [C in ErrorCode]: SdkErrorClass<C> };

/** The class for `code`, by name: `errorClassOf('box_not_found') === BoxNotFoundError`. */
export function errorClassOf<C extends ErrorCode>(code: C): SdkErrorClass<C> {
  return ERROR_CLASSES[code];
}

/** A typed error for `code`. */
export function sdkError(code: ErrorCode, message: string, options: SdkErrorOptions = {}): AgentboxSdkError {
  return new ERROR_CLASSES[code](message, options);
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** The JSON of `text`, or undefined when it is not JSON (e.g. a proxy's HTML page). */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** Whether `text` is an agentbox error body (`{error: {code, ...}}`), not e.g. a proxy's page. */
export function isErrorBody(text: string): boolean {
  const json = parseJson(text);
  return isRecord(json) && isRecord(json.error) && typeof json.error.code === 'string';
}

/**
 * The error a failed response stands for: its error body (`{error: {code, message, details?,
 * requestId}}`), or `internal` when it has none. Checked by hand, not with protocol's zod schema,
 * so that the SDK runs without zod (e.g. bundled for a browser).
 */
export function errorFromBody(
  status: number,
  text: string,
  requestIdHeader?: string | null,
): AgentboxSdkError {
  const json = parseJson(text);
  return errorFromObject(isRecord(json) ? json.error : undefined, {
    message: `daemon answered ${status}: ${text.slice(0, 200)}`,
    requestId: requestIdHeader ?? undefined,
    httpStatus: status,
  });
}

/**
 * The error of an error body's `error` object, also sent as an exec stream's `error` event;
 * `fallback` gives what it lacks.
 */
export function errorFromObject(
  value: unknown,
  fallback: { message: string; requestId?: string | undefined; httpStatus?: number | undefined },
): AgentboxSdkError {
  const error: Partial<Record<keyof ErrorBody['error'], unknown>> = isRecord(value) ? value : {};
  const requestId = typeof error.requestId === 'string' ? error.requestId : fallback.requestId;
  const message = typeof error.message === 'string' ? error.message : fallback.message;
  // A newer daemon's unknown code keeps its message, as `internal`.
  const code = isErrorCode(error.code) ? error.code : 'internal';
  const details = isRecord(error.details) ? error.details : undefined;
  return sdkError(code, message, {
    requestId,
    httpStatus: fallback.httpStatus,
    ...(details ? { details } : {}),
  });
}

// Named classes, one per code (a test checks every code of the registry has one).
export const InvalidRequestError = ERROR_CLASSES.invalid_request;
export type InvalidRequestError = InstanceType<typeof InvalidRequestError>;
export const UnauthorizedError = ERROR_CLASSES.unauthorized;
export type UnauthorizedError = InstanceType<typeof UnauthorizedError>;
export const ForbiddenError = ERROR_CLASSES.forbidden;
export type ForbiddenError = InstanceType<typeof ForbiddenError>;
export const BoxNotFoundError = ERROR_CLASSES.box_not_found;
export type BoxNotFoundError = InstanceType<typeof BoxNotFoundError>;
export const FileNotFoundError = ERROR_CLASSES.file_not_found;
export type FileNotFoundError = InstanceType<typeof FileNotFoundError>;
export const ProcessNotFoundError = ERROR_CLASSES.process_not_found;
export type ProcessNotFoundError = InstanceType<typeof ProcessNotFoundError>;
export const CommandNotFoundError = ERROR_CLASSES.command_not_found;
export type CommandNotFoundError = InstanceType<typeof CommandNotFoundError>;
export const TaskNotFoundError = ERROR_CLASSES.task_not_found;
export type TaskNotFoundError = InstanceType<typeof TaskNotFoundError>;
export const LibraryItemNotFoundError = ERROR_CLASSES.library_item_not_found;
export type LibraryItemNotFoundError = InstanceType<typeof LibraryItemNotFoundError>;
export const KeyNotFoundError = ERROR_CLASSES.key_not_found;
export type KeyNotFoundError = InstanceType<typeof KeyNotFoundError>;
export const PathOutsideWorkspaceError = ERROR_CLASSES.path_outside_workspace;
export type PathOutsideWorkspaceError = InstanceType<typeof PathOutsideWorkspaceError>;
export const InvalidStateError = ERROR_CLASSES.invalid_state;
export type InvalidStateError = InstanceType<typeof InvalidStateError>;
export const CapacityExhaustedError = ERROR_CLASSES.capacity_exhausted;
export type CapacityExhaustedError = InstanceType<typeof CapacityExhaustedError>;
export const ExecTimeoutError = ERROR_CLASSES.exec_timeout;
export type ExecTimeoutError = InstanceType<typeof ExecTimeoutError>;
export const GuestUnreachableError = ERROR_CLASSES.guest_unreachable;
export type GuestUnreachableError = InstanceType<typeof GuestUnreachableError>;
export const GuestAgentRestartedError = ERROR_CLASSES.guest_agent_restarted;
export type GuestAgentRestartedError = InstanceType<typeof GuestAgentRestartedError>;
export const GuestError = ERROR_CLASSES.guest_error;
export type GuestError = InstanceType<typeof GuestError>;
export const VmExitedError = ERROR_CLASSES.vm_exited;
export type VmExitedError = InstanceType<typeof VmExitedError>;
export const VersionMismatchError = ERROR_CLASSES.version_mismatch;
export type VersionMismatchError = InstanceType<typeof VersionMismatchError>;
export const ImageMissingError = ERROR_CLASSES.image_missing;
export type ImageMissingError = InstanceType<typeof ImageMissingError>;
export const ImageInvalidError = ERROR_CLASSES.image_invalid;
export type ImageInvalidError = InstanceType<typeof ImageInvalidError>;
export const PrerequisiteMissingError = ERROR_CLASSES.prerequisite_missing;
export type PrerequisiteMissingError = InstanceType<typeof PrerequisiteMissingError>;
export const BootFailedError = ERROR_CLASSES.boot_failed;
export type BootFailedError = InstanceType<typeof BootFailedError>;
export const SnapshotFailedError = ERROR_CLASSES.snapshot_failed;
export type SnapshotFailedError = InstanceType<typeof SnapshotFailedError>;
export const RouteNotFoundError = ERROR_CLASSES.route_not_found;
export type RouteNotFoundError = InstanceType<typeof RouteNotFoundError>;
export const PayloadTooLargeError = ERROR_CLASSES.payload_too_large;
export type PayloadTooLargeError = InstanceType<typeof PayloadTooLargeError>;
export const UnsupportedMediaTypeError = ERROR_CLASSES.unsupported_media_type;
export type UnsupportedMediaTypeError = InstanceType<typeof UnsupportedMediaTypeError>;
export const NotImplementedError = ERROR_CLASSES.not_implemented;
export type NotImplementedError = InstanceType<typeof NotImplementedError>;
export const DaemonUnreachableError = ERROR_CLASSES.daemon_unreachable;
export type DaemonUnreachableError = InstanceType<typeof DaemonUnreachableError>;
export const ShuttingDownError = ERROR_CLASSES.shutting_down;
export type ShuttingDownError = InstanceType<typeof ShuttingDownError>;
export const InternalError = ERROR_CLASSES.internal;
export type InternalError = InstanceType<typeof InternalError>;
