import type { Box } from '@agentbox/protocol';
import { callJson, daemonTarget } from '../daemon-client.js';

export type BoxAction = 'pause' | 'resume' | 'hibernate';

/**
 * `agentbox pause|resume|hibernate <box>`: asks the daemon to pause (stop the vCPUs), resume (or
 * wake), or hibernate (save to disk, end the VM process) one box; prints its new state.
 */
export async function boxAction(
  action: BoxAction,
  id: string,
  options: { url?: string; key?: string; json?: boolean },
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  const target = daemonTarget(options);
  const started = performance.now();
  const box = await callJson<Box>(target, 'POST', `/v1/boxes/${encodeURIComponent(id)}/${action}`);
  const ms = Math.round(performance.now() - started);
  out.write(options.json ? `${JSON.stringify(box)}\n` : `${box.id} ${box.state} (${ms} ms)\n`);
  return 0;
}
