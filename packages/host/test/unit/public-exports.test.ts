import { describe, expect, it } from 'vitest';
import * as host from '../../src/index.js';

describe('@agentbox/host public surface', () => {
  it('exports exactly these runtime names', () => {
    expect(Object.keys(host).sort()).toEqual([
      'AGENTBOX_VERSION',
      'DB_FILE',
      'DEFAULT_BOX_RESOURCES',
      'DEFAULT_MAX_BOXES',
      'DEFAULT_MAX_CONCURRENT_TASKS',
      'DEFAULT_MIN_FREE_DISK_BYTES',
      'DEFAULT_MIN_FREE_MEMORY_BYTES',
      'DEFAULT_TASK_OUTPUT_LIMITS',
      'GLOBAL_NAMESPACE',
      'GUEST_CA_BUNDLE',
      'GUEST_CA_PATH',
      'GUEST_ENV_FILE',
      'GUEST_LAYOUT',
      'LIVE_STATES',
      'MAX_EVENT_FIELD_BYTES',
      'MIGRATIONS',
      'OUTPUT_LIMIT_CODE',
      'REAP_INTERVAL_MS',
      'SHUTDOWN_GRACE_MS',
      'WORKSPACE',
      'attachEgress',
      'boxPath',
      'buildOpenApi',
      'createAuditStore',
      'createBoxService',
      'createBoxStore',
      'createHost',
      'createKeyStore',
      'createLibraryService',
      'createLogger',
      'createTaskService',
      'createTaskStore',
      'egressEnv',
      'hashKey',
      'isStoreFull',
      'itemHash',
      'migrate',
      'openDatabase',
      'schemaVersion',
      'workspaceFile',
    ]);
  });
});
