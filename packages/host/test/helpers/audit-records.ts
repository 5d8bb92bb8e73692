import type { EgressAuditRecord } from '@agentbox/protocol';

/** An egress audit record of a denied connection, as the gateway stores one. */
export function denialRecord(boxId: string, host: string, ts = new Date(0)): EgressAuditRecord {
  return {
    boxId,
    ts: ts.toISOString(),
    host,
    port: 443,
    method: 'CONNECT',
    decision: 'deny',
    code: 'domain_not_allowed',
    reason: 'not allowed',
    bytesUp: 0,
    bytesDown: 0,
    placeholderLeak: false,
  };
}
