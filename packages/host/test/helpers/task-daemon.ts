import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Task, TaskEvent } from '@agentbox/protocol';
import type { CertificateAuthority } from '@agentbox/egress';
import { client, leftoversIn, startDaemon, type Daemon } from './daemon.js';

/** What a scripted two-tool run streams, whatever the agent (status events left out). */
export const TWO_TOOL_EVENTS = [
  'text',
  'tool_use',
  'tool_result',
  'tool_use',
  'tool_result',
  'text',
  'completion',
];

export interface TaskDaemon {
  dataDir: string;
  daemon: Daemon;
  api: ReturnType<typeof client>;
  /** The events of a task once it has ended, and the task. */
  waitTask(id: string): Promise<{ task: Task; events: TaskEvent[] }>;
  /** Kills the daemon (`kill -9` by default) and starts a new one on the same data (the same keys). */
  restart(signal?: NodeJS.Signals): Promise<void>;
  /** Deletes every box, stops the daemon, kills what is left of its VMs, removes the data dir. */
  close(): Promise<void>;
}

export async function ndjson<T>(res: Response): Promise<T[]> {
  return (await res.text())
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as T);
}

/**
 * A daemon whose boxes reach the given fake upstreams (host → local port, TLS from `ca`) through
 * the real egress gateway, with `secrets` as the host's real credentials.
 */
export async function startTaskDaemon(options: {
  ca: CertificateAuthority;
  upstreams: Record<string, number>;
  secrets: Record<string, string>;
  args?: string[];
}): Promise<TaskDaemon> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-tasks-'));
  const caFile = path.join(dataDir, 'upstream-ca.pem');
  fs.writeFileSync(caFile, options.ca.certPem);
  const env = {
    AGENTBOX_EGRESS_TEST_UPSTREAMS: '1',
    AGENTBOX_EGRESS_TEST_CA: caFile,
    AGENTBOX_EGRESS_TEST_UPSTREAM_MAP: JSON.stringify(
      Object.fromEntries(
        Object.entries(options.upstreams).map(([host, port]) => [host, `127.0.0.1:${port}`]),
      ),
    ),
    ...Object.fromEntries(
      Object.entries(options.secrets).map(([name, value]) => [`AGENTBOX_SECRET_${name}`, value]),
    ),
  };
  let daemon = await startDaemon(dataDir, options.args ?? [], env);
  const key = daemon.initialKey!;
  let current = client(daemon.url, key);
  // Whichever daemon runs now: a restart changes its port.
  const api: TaskDaemon['api'] = (...args) => current(...args);
  return {
    dataDir,
    get daemon() {
      return daemon;
    },
    api,
    async restart(signal = 'SIGKILL') {
      daemon.process.kill(signal);
      await daemon.exited;
      daemon = await startDaemon(dataDir, options.args ?? [], env);
      current = client(daemon.url, key);
    },
    async waitTask(id) {
      const events = await ndjson<TaskEvent>(await api('GET', `/v1/tasks/${id}/events`));
      const task = (await (await api('GET', `/v1/tasks/${id}`)).json()) as Task;
      return { task, events };
    },
    async close() {
      const { boxes } = (await (await api('GET', '/v1/boxes')).json()) as { boxes: { id: string }[] };
      for (const box of boxes) await api('DELETE', `/v1/boxes/${box.id}`);
      daemon.process.kill('SIGTERM');
      await daemon.exited;
      for (const pid of leftoversIn(dataDir).processes) process.kill(pid, 'SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
