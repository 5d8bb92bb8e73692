import { AgentboxError } from '@agentbox/protocol';
import type { QmpClient, QmpEvent } from './qmp.js';

/**
 * Snapshots through QEMU's migration machinery (QEMU 7.2 has no `file:` URI: `exec:cat`).
 * Verified on this host: with the guest RAM on a shared file and `x-ignore-shared`, the stream
 * holds only device state (~60 KB, ~15 ms); without it, every non-zero RAM page is written.
 */

/** Migration is capped at 32 MiB/s by default; a snapshot to a local file should not be. */
const MAX_BANDWIDTH_BYTES_PER_S = 64 * 1024 ** 3;

/** Single-quotes a path for the `/bin/sh -c` QEMU runs an `exec:` URI with. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** The migration URIs, pure (pinned by a unit test). */
export function saveUri(statePath: string): string {
  return `exec:cat > ${shellQuote(statePath)}`;
}

export function loadUri(statePath: string): string {
  return `exec:cat ${shellQuote(statePath)}`;
}

interface MigrationInfo {
  status?: string;
  'error-desc'?: string;
}

/** Resolves when migration (either direction) completes; rejects when it fails or takes too long. */
function migrationDone(qmp: QmpClient, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(poll);
      qmp.off('event', onEvent);
      qmp.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const check = (info: MigrationInfo) => {
      if (info.status === 'completed') finish();
      else if (info.status === 'failed' || info.status === 'cancelled')
        finish(
          new AgentboxError(
            'snapshot_failed',
            `${what} ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`,
          ),
        );
    };
    const onEvent = (event: QmpEvent) => {
      if (event.event !== 'MIGRATION') return;
      const status = (event.data as { status?: string } | undefined)?.status;
      // The event carries no error text: ask for it.
      if (status === 'failed') void query().then(check, () => check({ status }));
      else check({ ...(status ? { status } : {}) });
    };
    const onClose = () => finish(new AgentboxError('vm_exited', `QEMU exited during ${what}`));
    const query = () => qmp.execute('query-migrate') as Promise<MigrationInfo>;
    const timer = setTimeout(
      () =>
        finish(new AgentboxError('snapshot_failed', `${what} did not finish within ${timeoutMs / 1000}s`)),
      timeoutMs,
    );
    // Events are enough; the poll is a safety net should one be missed.
    const poll = setInterval(() => void query().then(check, () => undefined), 250);
    qmp.on('event', onEvent);
    qmp.on('close', onClose);
  });
}

async function setCapabilities(qmp: QmpClient, ignoreShared: boolean): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'x-ignore-shared', state: ignoreShared },
      { capability: 'events', state: true },
    ],
  });
}

/**
 * Writes the VM's state to `statePath`. The vCPUs are stopped first, so the snapshot is one
 * instant and the VM stays stopped afterwards (QEMU's `postmigrate`); the caller quits it.
 */
export async function saveState(
  qmp: QmpClient,
  statePath: string,
  options: { ignoreShared: boolean; timeoutMs: number },
): Promise<void> {
  await qmp.execute('stop');
  await setCapabilities(qmp, options.ignoreShared);
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': MAX_BANDWIDTH_BYTES_PER_S });
  const done = migrationDone(qmp, options.timeoutMs, 'snapshot');
  await qmp.execute('migrate', { uri: saveUri(statePath) });
  await done;
}

/**
 * Loads a snapshot into a QEMU started with `-incoming defer` (and the same devices). The VM is
 * left stopped: the caller resumes it with `cont` once it is safe to (e.g. after discarding a
 * hibernation snapshot the running guest will make stale).
 */
export async function loadState(
  qmp: QmpClient,
  statePath: string,
  options: { ignoreShared: boolean; timeoutMs: number },
): Promise<void> {
  await setCapabilities(qmp, options.ignoreShared);
  const done = migrationDone(qmp, options.timeoutMs, 'restore');
  await qmp.execute('migrate-incoming', { uri: loadUri(statePath) });
  await done;
  const status = (await qmp.execute('query-status')) as { status?: string; running?: boolean };
  // A snapshot taken of a stopped VM restores stopped; one taken running would autostart.
  if (status.running) await qmp.execute('stop');
}

/** Pause = stop the vCPUs: the guest uses no host CPU; its RAM and connections stay. */
export async function pauseVcpus(qmp: QmpClient): Promise<void> {
  await qmp.execute('stop');
}

export async function resumeVcpus(qmp: QmpClient): Promise<void> {
  await qmp.execute('cont');
}
