import { EgressPolicySchema } from '@agentbox/protocol';
import os from 'node:os';
import { RUNTIMES, type Box, type StatusResponse } from '@agentbox/protocol';
import type { BoxRecord } from '../store/box-store.js';
import type { BoxService } from './box-service.js';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The API view of a stored box, with what only the running daemon knows of it. Pure. */
export function toApiBox(box: BoxRecord, live: { heldFor?: Box['heldFor'] } = {}): Box {
  return {
    id: box.id,
    state: box.state,
    userId: box.userId,
    runtime: box.runtime,
    memoryMib: box.memoryMib,
    vcpus: box.vcpus,
    diskGib: box.diskGib,
    ttlSeconds: box.ttlSeconds,
    labels: box.labels,
    pid: box.pid,
    createdAt: new Date(box.createdAt).toISOString(),
    updatedAt: new Date(box.updatedAt).toISOString(),
    expiresAt: iso(box.expiresAt),
    bootMs: box.bootMs,
    failureReason: box.failureReason,
    egress: box.egressPolicy === null ? null : EgressPolicySchema.parse(box.egressPolicy),
    startMode: box.startMode,
    heldFor: live.heldFor ?? null,
  };
}

/** Seed `GET /status`: live boxes keyed by user id, plus host resources. */
export function hostStatus(
  boxes: Pick<BoxService, 'list' | 'countByState' | 'isAlive' | 'limit'>,
  clock: () => number = Date.now,
): StatusResponse {
  const now = clock();
  const all = boxes.list({ actor: { keyId: 'status', scope: 'admin' } });
  const microvms: StatusResponse['microvms'] = {};
  const listed = all.filter(
    (box): box is typeof box & { userId: string } =>
      box.userId !== null && ['creating', 'running', 'paused', 'hibernated'].includes(box.state),
  );
  // User ids are per key: one that several keys use is told apart by its key, as `key/user` (a
  // user id holds no `/`, so no user id can take that name).
  const keysOfUser = new Map<string, number>();
  for (const box of listed) keysOfUser.set(box.userId, (keysOfUser.get(box.userId) ?? 0) + 1);
  for (const box of listed) {
    const name = keysOfUser.get(box.userId)! > 1 ? `${box.ownerKeyId}/${box.userId}` : box.userId;
    microvms[name] = {
      ip: null,
      runtime: box.runtime,
      pid: box.pid,
      alive: boxes.isAlive(box.id),
      created_at: box.createdAt / 1000,
      age_seconds: Math.floor((now - box.createdAt) / 1000),
      box_id: box.id,
      state: box.state,
      owner_key_id: box.ownerKeyId,
    };
  }
  const counts = boxes.countByState();
  return {
    active_microvms: counts.creating + counts.running + counts.paused,
    available_runtimes: [...RUNTIMES],
    microvms,
    host: {
      boxLimit: boxes.limit(),
      boxesByState: counts,
      memTotalBytes: os.totalmem(),
      memFreeBytes: os.freemem(),
      loadAverage: os.loadavg(),
      cpus: os.cpus().length,
      uptimeSeconds: os.uptime(),
    },
  };
}
