import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { Box } from '@agentbox/protocol';
import { processesMentioning } from '@agentbox/vm';
import { E2E_IMAGE_ENV } from '../../../../test/e2e-image.js';

export const CLI = fileURLToPath(new URL('../../../cli/bin/agentbox.js', import.meta.url));

export interface Daemon {
  process: ChildProcess;
  url: string;
  stdout: () => string;
  /** Its log (warn and above): where a failed re-adopt or boot says why. */
  stderr: () => string;
  /** The admin key printed on the first start, if this start printed one. */
  initialKey: string | undefined;
  exited: Promise<number | null>;
  /** Resolves once the daemon has re-adopted what the last one left (its "serving on" line). */
  serving: Promise<void>;
}

/**
 * Starts `agentbox serve` (the built CLI) on a free port; resolves once it serves, or with
 * `untilListening` as soon as it listens (while it still re-adopts the boxes an earlier daemon left).
 */
export async function startDaemon(
  dataDir: string,
  extraArgs: string[] = [],
  env: NodeJS.ProcessEnv = {},
  options: { untilListening?: boolean } = {},
): Promise<Daemon> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--data', dataDir, ...extraArgs], {
    env: {
      ...process.env,
      AGENTBOX_VALIDATE_RESPONSES: '1',
      AGENTBOX_LOG_LEVEL: 'warn',
      ...E2E_IMAGE_ENV,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const line = (pattern: RegExp) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`daemon did not start:\n${out}\n${err}`)), 180_000);
      timer.unref();
      const check = () => {
        const m = pattern.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      };
      check();
      child.stdout.on('data', check);
      void exited.then((code) => reject(new Error(`daemon exited (${code}):\n${out}\n${err}`)));
    });
  const serving = line(/serving on (http:\/\/\S+)/);
  serving.catch(() => undefined);
  const url = await (options.untilListening
    ? Promise.race([line(/listening on (http:\/\/[^\s;]+)/), serving])
    : serving);
  const key = /shown only this once:\n(abk_\S+)/.exec(out)?.[1];
  return {
    process: child,
    url,
    stdout: () => out,
    stderr: () => err,
    initialKey: key,
    exited,
    serving: serving.then(() => undefined),
  };
}

/** Runtime dirs of clones a daemon made ahead of requests (warm pool, standby): marked so. */
export function standbyDirsIn(dataDir: string): string[] {
  const boxes = path.join(dataDir, 'boxes');
  if (!fs.existsSync(boxes)) return [];
  return fs.readdirSync(boxes).filter((id) => fs.existsSync(path.join(boxes, id, '.warm-pool')));
}

/**
 * What a data dir still holds of its boxes: live QEMU processes and runtime dirs; with
 * `exceptStandby`, not counting the clones a running daemon keeps ready (standbyDirsIn). A running
 * daemon may make or drop such a clone while this looks: its marker is written before its QEMU
 * starts and goes only with its dir, so a dir marked before or after the process scan is spared.
 */
export function leftoversIn(
  dataDir: string,
  options: { exceptStandby?: boolean } = {},
): { processes: number[]; dirs: string[] } {
  const boxes = path.join(dataDir, 'boxes');
  const markedBefore = options.exceptStandby ? standbyDirsIn(dataDir) : [];
  const pids = processesMentioning(boxes);
  const dirs = fs.existsSync(boxes) ? fs.readdirSync(boxes) : [];
  const spared = new Set([...markedBefore, ...(options.exceptStandby ? standbyDirsIn(dataDir) : [])]);
  const sparedPids = new Set([...spared].flatMap((id) => processesMentioning(`${path.join(boxes, id)}/`)));
  return {
    // A process gone by now (a clone dropped while this looked) is not left over.
    processes: pids.filter((pid) => !sparedPids.has(pid) && fs.existsSync(`/proc/${pid}`)),
    dirs: dirs.filter((id) => !spared.has(id) && fs.existsSync(path.join(boxes, id))),
  };
}

/** Deletes every box the client's key sees (whatever a test left); nothing if the daemon is gone. */
export async function deleteAllBoxes(api: ReturnType<typeof client>): Promise<void> {
  const list = await api('GET', '/v1/boxes').catch(() => undefined);
  if (!list?.ok) return;
  for (const box of ((await list.json()) as { boxes: Box[] }).boxes)
    await api('DELETE', `/v1/boxes/${box.id}`);
}

/** Ends a test's daemon: its boxes deleted, SIGTERM, then it must exit 0 and leave no VM or box dir. */
export async function stopDaemonClean(
  daemon: Daemon,
  api: ReturnType<typeof client>,
  dataDir: string,
): Promise<void> {
  await deleteAllBoxes(api);
  daemon.process.kill('SIGTERM');
  expect(await daemon.exited).toBe(0);
  expect(leftoversIn(dataDir)).toEqual({ processes: [], dirs: [] });
}

export function client(url: string, key: string) {
  return async (method: string, route: string, body?: unknown, headers: Record<string, string> = {}) => {
    const init: RequestInit = { method, headers: { 'x-api-key': key, ...headers } };
    if (body !== undefined) {
      if (Buffer.isBuffer(body)) {
        init.body = body;
        init.headers = { ...init.headers, 'content-type': 'application/octet-stream' };
      } else {
        init.body = JSON.stringify(body);
        init.headers = { ...init.headers, 'content-type': 'application/json' };
      }
    }
    return fetch(`${url}${route}`, init);
  };
}
