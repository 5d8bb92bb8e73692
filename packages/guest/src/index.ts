export { GuestService, type GuestServiceOptions } from './service.js';
export { AGENT_VERSION } from './version.js';
