/**
 * Numbered schema migrations, applied in order, each in its own transaction, recorded in
 * `schema_migrations`. Append only: never edit a migration that has shipped.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'api keys and boxes',
    sql: `
      CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('admin', 'user')),
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER,
        last_used_at INTEGER
      );
      CREATE TABLE boxes (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('creating', 'running', 'stopped', 'deleted', 'failed')),
        owner_key_id TEXT NOT NULL,
        user_id TEXT,
        runtime TEXT NOT NULL,
        memory_mib INTEGER NOT NULL,
        vcpus INTEGER NOT NULL,
        disk_gib INTEGER NOT NULL,
        ttl_seconds INTEGER,
        labels TEXT NOT NULL DEFAULT '{}',
        pid INTEGER,
        pid_start_time INTEGER,
        dir TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        expires_at INTEGER,
        boot_ms INTEGER,
        failure_reason TEXT
      );
      CREATE INDEX boxes_state ON boxes (state);
    `,
  },
  {
    version: 2,
    name: 'one live box per user id, transition log',
    sql: `
      CREATE UNIQUE INDEX boxes_live_user ON boxes (user_id)
        WHERE user_id IS NOT NULL AND state IN ('creating', 'running', 'stopped');
      CREATE TABLE box_transitions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        box_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT
      );
      CREATE INDEX box_transitions_box ON box_transitions (box_id, seq);
    `,
  },
  {
    version: 3,
    name: 'egress policy per box, egress audit',
    sql: `
      ALTER TABLE boxes ADD COLUMN egress_policy TEXT;
      CREATE TABLE egress_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        box_id TEXT NOT NULL,
        ts TEXT NOT NULL,
        record TEXT NOT NULL
      );
      CREATE INDEX egress_audit_box ON egress_audit (box_id, seq);
    `,
  },
  {
    version: 4,
    name: 'agent tasks and their events',
    sql: `
      CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        owner_key_id TEXT NOT NULL,
        target TEXT NOT NULL CHECK (target IN ('box', 'user', 'ephemeral')),
        box_id TEXT,
        user_id TEXT,
        state TEXT NOT NULL
          CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
        agent TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        result TEXT,
        error_code TEXT,
        error_message TEXT,
        library TEXT NOT NULL DEFAULT '[]',
        session_id TEXT
      );
      CREATE INDEX tasks_state ON tasks (state, created_at);
      CREATE INDEX tasks_box ON tasks (box_id, finished_at);
      CREATE TABLE task_events (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts TEXT NOT NULL,
        type TEXT NOT NULL,
        content TEXT NOT NULL,
        raw TEXT,
        PRIMARY KEY (task_id, seq)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 5,
    name: 'paused and hibernated boxes, image and start mode per box',
    // SQLite cannot change a CHECK constraint: the table is rebuilt with the new states.
    sql: `
      CREATE TABLE boxes_v5 (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN
          ('creating', 'running', 'paused', 'hibernated', 'stopped', 'deleted', 'failed')),
        owner_key_id TEXT NOT NULL,
        user_id TEXT,
        runtime TEXT NOT NULL,
        memory_mib INTEGER NOT NULL,
        vcpus INTEGER NOT NULL,
        disk_gib INTEGER NOT NULL,
        ttl_seconds INTEGER,
        labels TEXT NOT NULL DEFAULT '{}',
        pid INTEGER,
        pid_start_time INTEGER,
        dir TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        expires_at INTEGER,
        boot_ms INTEGER,
        failure_reason TEXT,
        egress_policy TEXT,
        image_id TEXT,
        start_mode TEXT
      );
      INSERT INTO boxes_v5 (id, state, owner_key_id, user_id, runtime, memory_mib, vcpus, disk_gib,
          ttl_seconds, labels, pid, pid_start_time, dir, created_at, updated_at, expires_at, boot_ms,
          failure_reason, egress_policy)
        SELECT id, state, owner_key_id, user_id, runtime, memory_mib, vcpus, disk_gib, ttl_seconds,
          labels, pid, pid_start_time, dir, created_at, updated_at, expires_at, boot_ms,
          failure_reason, egress_policy FROM boxes;
      DROP TABLE boxes;
      ALTER TABLE boxes_v5 RENAME TO boxes;
      CREATE INDEX boxes_state ON boxes (state);
      CREATE UNIQUE INDEX boxes_live_user ON boxes (user_id)
        WHERE user_id IS NOT NULL AND state IN ('creating', 'running', 'paused', 'hibernated', 'stopped');
    `,
  },
  {
    version: 6,
    name: 'tasks keep continue-last-session across restarts, list pages by (created_at, id)',
    sql: `
      ALTER TABLE tasks ADD COLUMN continue_last_session INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX tasks_created ON tasks (created_at, id);
    `,
  },
  {
    version: 7,
    name: 'a task event records that its raw line or content was cut to the per-event limit',
    sql: `
      ALTER TABLE task_events ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 8,
    name: "a key's grants: repositories the host's GitHub token may serve, live boxes and tasks at once",
    sql: `
      ALTER TABLE api_keys ADD COLUMN repo_grants TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE api_keys ADD COLUMN max_boxes INTEGER;
      ALTER TABLE api_keys ADD COLUMN max_tasks INTEGER;
    `,
  },
  {
    version: 9,
    name: 'a user id names one live box per API key, not per host',
    sql: `
      DROP INDEX boxes_live_user;
      CREATE UNIQUE INDEX boxes_live_user ON boxes (owner_key_id, user_id)
        WHERE user_id IS NOT NULL AND state IN ('creating', 'running', 'paused', 'hibernated', 'stopped');
    `,
  },
  {
    version: 10,
    name: "a key's model spend, counted on the host, and the cap on it",
    sql: `
      ALTER TABLE api_keys ADD COLUMN max_spend_usd REAL;
      ALTER TABLE api_keys ADD COLUMN spent_usd REAL NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 11,
    name: "caps on the memory and disk of a key's live boxes together",
    sql: `
      ALTER TABLE api_keys ADD COLUMN max_memory_mib INTEGER;
      ALTER TABLE api_keys ADD COLUMN max_disk_gib INTEGER;
    `,
  },
  {
    version: 12,
    name: "when a key's spend count was last started again",
    sql: `ALTER TABLE api_keys ADD COLUMN spend_reset_at INTEGER;`,
  },
  {
    version: 13,
    name: 'deleted tasks whose events are still being removed',
    sql: `CREATE TABLE task_deletions (task_id TEXT PRIMARY KEY) WITHOUT ROWID;`,
  },
  {
    version: 14,
    name: "a box's egress CA and placeholders, kept for the next daemon",
    // JSON; the next daemon serves what runs in the box with the CA and placeholders it started with.
    sql: `ALTER TABLE boxes ADD COLUMN egress_identity TEXT;`,
  },
  {
    version: 15,
    name: "how much of a journaled agent's stdout a task's stored events cover",
    // NULL: the agent's output is not journaled in its box (an older agent), so no restarted
    // daemon can take the run up.
    sql: `ALTER TABLE tasks ADD COLUMN output_offset INTEGER;`,
  },
  {
    version: 16,
    name: "what a running task's model calls cost by the host's count",
    // A daemon that takes the task up goes on counting from here (its maxSpendUsd holds across).
    sql: `ALTER TABLE tasks ADD COLUMN metered_usd REAL;`,
  },
  {
    version: 17,
    name: 'background commands: what runs in a box past its request, and how each ended',
    // Their output stays in the box (the guest's exec journal); the host keeps what a list shows.
    sql: `
      CREATE TABLE box_commands (
        id TEXT PRIMARY KEY,
        box_id TEXT NOT NULL,
        owner_key_id TEXT NOT NULL,
        argv TEXT NOT NULL,
        cwd TEXT,
        pid INTEGER,
        state TEXT NOT NULL,
        exit_code INTEGER,
        signal TEXT,
        timed_out INTEGER NOT NULL DEFAULT 0,
        duration_ms REAL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        failure_reason TEXT
      );
      CREATE INDEX box_commands_by_box ON box_commands (box_id, started_at);
    `,
  },
];
