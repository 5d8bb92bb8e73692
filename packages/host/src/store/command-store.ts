import type { Command, ExecExit } from '@agentbox/protocol';
import type { Db } from './db.js';

/** Ended commands a box keeps listed; past this its oldest ended ones are forgotten. */
export const MAX_COMMANDS_PER_BOX = 256;

export interface CommandRecord {
  id: string;
  boxId: string;
  ownerKeyId: string;
  argv: string[];
  cwd: string | null;
  pid: number | null;
  state: Command['state'];
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  durationMs: number | null;
  startedAt: number;
  finishedAt: number | null;
  failureReason: string | null;
}

interface CommandRow {
  id: string;
  box_id: string;
  owner_key_id: string;
  argv: string;
  cwd: string | null;
  pid: number | null;
  state: Command['state'];
  exit_code: number | null;
  signal: string | null;
  timed_out: number;
  duration_ms: number | null;
  started_at: number;
  finished_at: number | null;
  failure_reason: string | null;
}

function fromRow(row: CommandRow): CommandRecord {
  return {
    id: row.id,
    boxId: row.box_id,
    ownerKeyId: row.owner_key_id,
    argv: JSON.parse(row.argv) as string[],
    cwd: row.cwd,
    pid: row.pid,
    state: row.state,
    exitCode: row.exit_code,
    signal: row.signal,
    timedOut: row.timed_out === 1,
    durationMs: row.duration_ms,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    failureReason: row.failure_reason,
  };
}

/** Background commands, per box: the host's record of each (its output stays in the box). */
export function createCommandStore(db: Db, clock: () => number) {
  const insert = db.prepare(
    `INSERT INTO box_commands (id, box_id, owner_key_id, argv, cwd, pid, state, started_at)
     VALUES (?, ?, ?, ?, ?, ?, 'running', ?)`,
  );
  const byId = db.prepare<[string], CommandRow>('SELECT * FROM box_commands WHERE id = ?');
  const byBox = db.prepare<[string], CommandRow>(
    'SELECT * FROM box_commands WHERE box_id = ? ORDER BY started_at, rowid',
  );
  const running = db.prepare<[], CommandRow>(
    "SELECT * FROM box_commands WHERE state = 'running' ORDER BY started_at, rowid",
  );
  const runningInBox = db.prepare<[string], { n: number }>(
    "SELECT count(*) AS n FROM box_commands WHERE box_id = ? AND state = 'running'",
  );
  const exited = db.prepare(
    `UPDATE box_commands SET state = 'exited', exit_code = ?, signal = ?, timed_out = ?, duration_ms = ?,
     finished_at = ? WHERE id = ? AND state = 'running'`,
  );
  const lost = db.prepare(
    `UPDATE box_commands SET state = 'lost', finished_at = ?, failure_reason = ?
     WHERE id = ? AND state = 'running'`,
  );
  const remove = db.prepare('DELETE FROM box_commands WHERE id = ?');
  const trim = db.prepare(
    `DELETE FROM box_commands WHERE id IN (SELECT id FROM box_commands WHERE box_id = ? AND state != 'running'
     ORDER BY started_at DESC, rowid DESC LIMIT -1 OFFSET ?)`,
  );
  return {
    /** Records a command whose process started; a box's oldest ended commands past the cap go. */
    add(command: {
      id: string;
      boxId: string;
      ownerKeyId: string;
      argv: string[];
      cwd?: string;
      pid: number | null;
    }) {
      db.transaction(() => {
        insert.run(
          command.id,
          command.boxId,
          command.ownerKeyId,
          JSON.stringify(command.argv),
          command.cwd ?? null,
          command.pid,
          clock(),
        );
        trim.run(command.boxId, MAX_COMMANDS_PER_BOX);
      })();
      return fromRow(byId.get(command.id)!);
    },
    get(id: string): CommandRecord | undefined {
      const row = byId.get(id);
      return row && fromRow(row);
    },
    listByBox(boxId: string): CommandRecord[] {
      return byBox.all(boxId).map(fromRow);
    },
    /** Every command recorded running (a starting daemon watches them again). */
    running(): CommandRecord[] {
      return running.all().map(fromRow);
    },
    runningCount(boxId: string): number {
      return runningInBox.get(boxId)!.n;
    },
    /** Its exit came; false when it was not running (ended or removed meanwhile). */
    finish(id: string, exit: ExecExit): boolean {
      const at = clock();
      return (
        exited.run(exit.exitCode, exit.signal, exit.timedOut ? 1 : 0, exit.durationMs, at, id).changes > 0
      );
    },
    /** Its process is gone without an exit status. */
    lose(id: string, reason: string): boolean {
      return lost.run(clock(), reason, id).changes > 0;
    },
    remove(id: string): void {
      remove.run(id);
    },
  };
}

export type CommandStore = ReturnType<typeof createCommandStore>;
