export {
  createHost,
  AGENTBOX_VERSION,
  DEFAULT_MAX_BOXES,
  DEFAULT_MIN_FREE_DISK_BYTES,
  DEFAULT_MIN_FREE_MEMORY_BYTES,
  DEFAULT_BOX_RESOURCES,
  REAP_INTERVAL_MS,
  SHUTDOWN_GRACE_MS,
  type Host,
  type HostOptions,
} from './host.js';
export { buildOpenApi } from './api/openapi.js';
export type { RouteDef, ResponseSpec, AuthLevel } from './api/route.js';
export { openDatabase, migrate, schemaVersion, isStoreFull, DB_FILE, type Db } from './store/db.js';
export { MIGRATIONS, type Migration } from './store/migrations.js';
export {
  createKeyStore,
  hashKey,
  type KeyStore,
  type KeyScope,
  type KeyGrants,
  type ApiKeyInfo,
  type Actor,
} from './store/key-store.js';
export { createBoxStore, LIVE_STATES, type BoxStore, type BoxRecord } from './store/box-store.js';
export {
  createBoxService,
  GUEST_ENV_FILE,
  GUEST_LAYOUT,
  type GuestLayout,
  type BoxService,
  type BoxBackend,
  type ProcessProbe,
} from './services/box-service.js';
export { workspaceFile, boxPath, WORKSPACE } from './services/paths.js';
export { createLogger } from './logger.js';
export {
  attachEgress,
  egressEnv,
  GUEST_CA_PATH,
  GUEST_CA_BUNDLE,
  type EgressBoxSession,
} from './services/box-egress.js';
export { createAuditStore, type AuditStore } from './store/audit-store.js';
export { createTaskStore, type TaskStore, type TaskRecord } from './store/task-store.js';
export {
  createTaskService,
  DEFAULT_MAX_CONCURRENT_TASKS,
  type TaskService,
} from './services/task-service.js';
export {
  DEFAULT_TASK_OUTPUT_LIMITS,
  MAX_EVENT_FIELD_BYTES,
  OUTPUT_LIMIT_CODE,
  type TaskOutputLimits,
} from './services/task-output.js';
export {
  createLibraryService,
  GLOBAL_NAMESPACE,
  itemHash,
  type LibraryService,
} from './services/library-service.js';
