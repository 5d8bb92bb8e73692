export {
  PROTOCOL_VERSION,
  IMAGE_API_VERSION,
  GUEST_PORT_NAME,
  GUEST_AGENT_DIR,
  GUEST_HELLO_MARK,
  GUEST_PROXY_PORT,
  GUEST_PROXY_URL,
  GUEST_NO_PROXY,
  GUEST_LANG,
  GUEST_NODE_OPTIONS,
} from './version.js';
export {
  ERROR_CODES,
  ERROR_CODE_LIST,
  AgentboxError,
  isAgentboxError,
  isErrorCode,
  httpStatusOf,
  type ErrorCode,
  type AgentboxErrorOptions,
} from './errors.js';
export * from './guest.js';
export * from './api.js';
export * from './egress.js';
export * from './task.js';
export * from './library.js';
