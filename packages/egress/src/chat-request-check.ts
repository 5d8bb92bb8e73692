import { Worker } from 'node:worker_threads';

/** What the gateway needs of a Chat Completions request body (what the worker answers). */
export type ChatRequestShape =
  | { shape: 'not_json' }
  | { shape: 'not_object' }
  | { shape: 'object'; stream: boolean; includeUsage: boolean };

/**
 * Why the answer to a Chat Completions request of this shape would not carry its usage, or
 * undefined when it will: a streamed call has it only with `stream_options.include_usage`. Pure.
 */
export function unpricedChatShape(request: ChatRequestShape): string | undefined {
  switch (request.shape) {
    case 'not_json':
      return 'its body is not JSON';
    case 'not_object':
      return 'its body is not a JSON object';
    case 'object':
      return request.stream && !request.includeUsage
        ? 'a streamed call is priced only with "stream_options": {"include_usage": true}'
        : undefined;
  }
}

// Next to the sources in both layouts: src/ under the tests, dist/../src/ when built.
const WORKER_URL = new URL('../src/chat-request-worker.mjs', import.meta.url);
/** A hostile body parsed into more than this is not read (the worker ends; the call is refused). */
const WORKER_HEAP_MIB = 512;

let worker: Worker | undefined;
let nextId = 0;
const pending = new Map<
  number,
  { resolve: (shape: ChatRequestShape) => void; reject: (err: Error) => void }
>();

function startWorker(): Worker {
  const started = new Worker(WORKER_URL, {
    // Not the daemon's own flags (some, as --input-type, a worker started from a file refuses).
    execArgv: [],
    resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MIB },
  });
  started.on('message', (answer: ChatRequestShape & { id: number }) => {
    const { id, ...shape } = answer;
    pending.get(id)?.resolve(shape);
    pending.delete(id);
    // Idle, it holds nobody: the process may exit around it.
    if (pending.size === 0) started.unref();
  });
  const fail = (err: Error) => {
    if (worker === started) worker = undefined;
    for (const job of pending.values()) job.reject(err);
    pending.clear();
  };
  started.on('error', fail);
  started.on('exit', (code) => fail(new Error(`the request reader exited (code ${code})`)));
  return started;
}

/**
 * The shape of a Chat Completions request body, read in a worker thread, one body at a time
 * (queued in its inbox). Rejects when the body could not be read there (it ran out of memory).
 */
export function chatRequestShape(body: Uint8Array): Promise<ChatRequestShape> {
  worker ??= startWorker();
  worker.ref();
  const id = nextId++;
  const answered = new Promise<ChatRequestShape>((resolve, reject) => pending.set(id, { resolve, reject }));
  // The body is copied: the gateway still sends the original upstream.
  worker.postMessage({ id, bytes: body });
  return answered;
}

/**
 * Why this Chat Completions request would not be priced (see unpricedChatShape), read off the
 * event loop. Asked under a limit only, so the call is refused with a reason up front rather than
 * closing the budget once its cost turns out unreadable. A body that a lenient parser reads
 * otherwise (a duplicate key, say) still cannot spend unseen: an answer without usage closes every
 * limited budget (see MeteredCall.end).
 */
export async function chatRequestUnpriced(body: Uint8Array): Promise<string | undefined> {
  try {
    return unpricedChatShape(await chatRequestShape(body));
  } catch {
    return 'its body could not be read';
  }
}
