import { createAuditStore, createBoxStore, openDatabase } from '@agentbox/host';
import { AgentboxError, type EgressAuditRecord } from '@agentbox/protocol';
import { writeJson } from '../output.js';
import { dataDirOf } from './serve.js';

/** One line per egress decision: time, verdict and code, destination, request, bytes. */
export function formatAudit(rows: { seq: number; record: EgressAuditRecord }[]): string {
  if (rows.length === 0) return 'no egress recorded for this box';
  return rows
    .map(({ record: r }) => {
      const target = `${r.host}:${r.port}`;
      const request = [r.method, r.path].filter(Boolean).join(' ');
      const leak = r.placeholderLeak ? ' placeholder-leak' : '';
      return `${r.ts} ${r.decision.toUpperCase().padEnd(5)} ${r.code.padEnd(24)} ${target} ${request} up=${r.bytesUp} down=${r.bytesDown}${leak}`;
    })
    .join('\n');
}

/** Records shown without --limit (the most --limit takes). */
const AUDIT_LIMIT = 1000;

/** `agentbox audit <box>`: the box's egress decisions, read from the daemon's store. */
export function audit(options: {
  box: string;
  data?: string;
  json: boolean;
  after?: number;
  limit?: number;
}): number {
  const db = openDatabase(dataDirOf(options.data), { existing: true });
  try {
    if (!createBoxStore(db).get(options.box)) {
      throw new AgentboxError('box_not_found', `no box ${options.box} in ${dataDirOf(options.data)}`);
    }
    const limit = options.limit ?? AUDIT_LIMIT;
    const rows = createAuditStore(db).list(options.box, {
      ...(options.after !== undefined ? { after: options.after } : {}),
      limit,
    });
    // The body of GET /v1/boxes/{id}/egress: `next` says whether --after would find more.
    if (options.json)
      writeJson({
        records: rows.map((r) => ({ ...r.record, seq: r.seq })),
        next: rows.length === limit ? rows.at(-1)!.seq : null,
      });
    else process.stdout.write(`${formatAudit(rows)}\n`);
    return 0;
  } finally {
    db.close();
  }
}
