import {
  AgentboxError,
  ErrorBodySchema,
  TERMINAL_TASK_STATES,
  type Task,
  type TaskEvent,
} from '@agentbox/protocol';

export const DEFAULT_DAEMON_URL = 'http://127.0.0.1:8080';

export interface DaemonTarget {
  url: string;
  key: string;
}

/** The daemon to talk to: flags, then AGENTBOX_URL / AGENTBOX_API_KEY. */
export function daemonTarget(options: { url?: string; key?: string }, env = process.env): DaemonTarget {
  const key = options.key ?? env.AGENTBOX_API_KEY;
  if (!key) {
    throw new AgentboxError(
      'unauthorized',
      'no API key: pass --key or set AGENTBOX_API_KEY (`agentbox keys create` makes one)',
    );
  }
  return { url: (options.url ?? env.AGENTBOX_URL ?? DEFAULT_DAEMON_URL).replace(/\/+$/, ''), key };
}

async function failure(res: Response): Promise<AgentboxError> {
  const text = await res.text();
  try {
    const body = ErrorBodySchema.parse(JSON.parse(text));
    const field = body.error.details?.issues;
    return new AgentboxError(body.error.code, body.error.message, {
      ...(field ? { details: body.error.details } : {}),
    });
  } catch {
    return new AgentboxError('internal', `daemon answered ${res.status}: ${text.slice(0, 200)}`);
  }
}

async function request(
  target: DaemonTarget,
  method: string,
  path: string,
  body?: unknown,
): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(`${target.url}${path}`, {
      method,
      headers: {
        'x-api-key': target.key,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (err) {
    throw new AgentboxError(
      'daemon_unreachable',
      `cannot reach the daemon at ${target.url} (${(err as Error).message}); is \`agentbox serve\` running?`,
    );
  }
  if (!res.ok) throw await failure(res);
  return res;
}

export async function callJson<T>(
  target: DaemonTarget,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  return (await (await request(target, method, path, body)).json()) as T;
}

/**
 * The events of a task after `after`, as they come, until the task ends. A dropped connection is
 * resumed from the last event seen, so nothing is lost or repeated.
 */
export async function* followTaskEvents(
  target: DaemonTarget,
  taskId: string,
  after = 0,
): AsyncGenerator<TaskEvent> {
  let last = after;
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await request(
        target,
        'GET',
        `/v1/tasks/${encodeURIComponent(taskId)}/events?after=${last}`,
      );
      let buffered = '';
      const decoder = new TextDecoder();
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffered += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (!line.trim()) continue;
          const event = JSON.parse(line) as TaskEvent;
          last = event.seq;
          attempt = 0;
          yield event;
        }
      }
      // The stream ends when the task does; a cut connection ends it early: then resume.
      const task = await callJson<Task>(target, 'GET', `/v1/tasks/${encodeURIComponent(taskId)}`);
      if (TERMINAL_TASK_STATES.has(task.state) && task.eventCount <= last) return;
    } catch (err) {
      // Errors the daemon answered (bad id, bad key) are final; a lost connection is retried.
      if (err instanceof AgentboxError && err.code !== 'daemon_unreachable') throw err;
      if (attempt >= 5) throw err;
    }
    await new Promise((r) => setTimeout(r, 500 * Math.min(attempt + 1, 4)));
  }
}
