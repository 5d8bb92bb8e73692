import type { ProcessInfo } from '@agentbox/protocol';
import type { HttpTransport, RequestOpts } from './http.js';

/** `box.processes`: what runs in the box, and signals to it. */
export class Processes {
  constructor(
    private readonly http: HttpTransport,
    private readonly boxId: string,
  ) {}

  /** Every process in the box. */
  async list(opts: RequestOpts = {}): Promise<ProcessInfo[]> {
    const body = await this.http.json<{ processes: ProcessInfo[] }>({
      method: 'GET',
      path: `/v1/boxes/${encodeURIComponent(this.boxId)}/processes`,
      ...opts,
    });
    return body.processes;
  }

  /** Sends `signal` (default SIGKILL) to a process; a pid that is gone is `ProcessNotFoundError`. */
  async kill(pid: number, signal = 'SIGKILL', opts: RequestOpts = {}): Promise<void> {
    await this.http.json({
      method: 'DELETE',
      path: `/v1/boxes/${encodeURIComponent(this.boxId)}/processes/${pid}`,
      query: { signal },
      ...opts,
    });
  }
}
