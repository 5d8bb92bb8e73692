import { daemonClient } from '../daemon.js';
import { writeJson } from '../output.js';

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
  const client = daemonClient(options);
  const started = performance.now();
  const box = await client.boxes[action](id);
  const ms = Math.round(performance.now() - started);
  if (options.json) writeJson(box, out);
  else out.write(`${box.id} ${box.state} (${ms} ms)\n`);
  return 0;
}
