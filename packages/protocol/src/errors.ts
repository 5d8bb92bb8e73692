/**
 * The closed registry of error codes. Every error that crosses a boundary (HTTP, CLI, guest channel)
 * carries one of these codes; the HTTP status comes from this table and nowhere else.
 */
export const ERROR_CODES = {
  invalid_request: { status: 400, description: 'The request is malformed or a field is invalid.' },
  unauthorized: { status: 401, description: 'Missing or wrong API key.' },
  forbidden: { status: 403, description: 'The key may not act on this resource.' },
  box_not_found: { status: 404, description: 'No box with that id.' },
  file_not_found: { status: 404, description: 'No such file or directory in the box.' },
  process_not_found: { status: 404, description: 'No such process in the box.' },
  task_not_found: { status: 404, description: 'No task with that id.' },
  command_not_found: { status: 404, description: 'No background command with that id in the box.' },
  library_item_not_found: { status: 404, description: 'No such library item.' },
  key_not_found: { status: 404, description: 'No API key with that id.' },
  path_outside_workspace: { status: 400, description: 'The path escapes the allowed root.' },
  invalid_state: { status: 409, description: 'The operation is not legal in the current state.' },
  capacity_exhausted: { status: 429, description: 'The host has no room for another box.' },
  exec_timeout: { status: 504, description: 'The command ran past its timeout and was killed.' },
  guest_unreachable: { status: 502, description: 'The guest agent did not answer.' },
  guest_agent_restarted: {
    status: 502,
    description: 'The guest agent restarted; in-flight calls were lost.',
  },
  guest_error: { status: 500, description: 'The guest agent failed to carry out the request.' },
  vm_exited: { status: 502, description: 'The VM exited while the call was in flight.' },
  version_mismatch: {
    status: 500,
    description: 'Host and guest speak different protocol or image versions.',
  },
  image_missing: { status: 503, description: 'No usable image; build one with `agentbox image build`.' },
  image_invalid: { status: 500, description: 'The image is damaged or incompatible; rebuild it.' },
  prerequisite_missing: { status: 503, description: 'A host tool is missing; run `agentbox setup`.' },
  boot_failed: { status: 502, description: 'The VM did not boot.' },
  snapshot_failed: {
    status: 500,
    description: 'A snapshot (hibernate, template) could not be written or restored.',
  },
  route_not_found: { status: 404, description: 'No such endpoint; see GET /openapi.json.' },
  payload_too_large: { status: 413, description: 'The request body is larger than the limit.' },
  unsupported_media_type: {
    status: 415,
    description: 'The request body has a content type this endpoint does not take.',
  },
  not_implemented: { status: 501, description: 'The endpoint exists but is not implemented yet.' },
  daemon_unreachable: {
    status: 503,
    description: 'The CLI or SDK could not reach the daemon; is `agentbox serve` running?',
  },
  shutting_down: { status: 503, description: 'The daemon is shutting down; retry against the new one.' },
  internal: { status: 500, description: 'Unexpected error.' },
} as const satisfies Record<string, { status: number; description: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;
export const ERROR_CODE_LIST = Object.keys(ERROR_CODES) as ErrorCode[];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

export function httpStatusOf(code: ErrorCode): number {
  return ERROR_CODES[code].status;
}

export interface AgentboxErrorOptions extends ErrorOptions {
  details?: Record<string, unknown>;
}

/** The one error class that crosses package boundaries; `code` is machine-readable, `message` says what to do. */
export class AgentboxError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: AgentboxErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details;
  }

  get status(): number {
    return httpStatusOf(this.code);
  }
}

export function isAgentboxError(err: unknown): err is AgentboxError {
  return err instanceof AgentboxError;
}
