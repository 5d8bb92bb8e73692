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

interface Job {
  body: Uint8Array;
  resolve: (shape: ChatRequestShape) => void;
  reject: (err: Error) => void;
}

/**
 * Reads Chat Completions request bodies in a worker thread, one at a time (queued in its inbox).
 * A body the worker cannot read (it ran out of heap) ends it: that body's read rejects, and the
 * bodies queued behind it are read by a new worker.
 */
export class ChatRequestReader {
  #worker: Worker | undefined;
  #nextId = 0;
  /** In the order they were sent, which is the order the worker reads them. */
  readonly #pending = new Map<number, Job>();

  constructor(private readonly heapMib = WORKER_HEAP_MIB) {}

  shape(body: Uint8Array): Promise<ChatRequestShape> {
    const id = this.#nextId++;
    const answered = new Promise<ChatRequestShape>((resolve, reject) =>
      this.#pending.set(id, { body, resolve, reject }),
    );
    this.#workerNow().postMessage({ id, bytes: body });
    return answered;
  }

  #workerNow(): Worker {
    this.#worker ??= this.#start();
    this.#worker.ref();
    return this.#worker;
  }

  #start(): Worker {
    const started = new Worker(WORKER_URL, {
      // Not the daemon's own flags (some, as --input-type, a worker started from a file refuses).
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: this.heapMib },
    });
    started.on('message', (answer: ChatRequestShape & { id: number }) => {
      const { id, ...shape } = answer;
      this.#pending.get(id)?.resolve(shape);
      this.#pending.delete(id);
      // Idle, it holds nobody: the process may exit around it.
      if (this.#pending.size === 0) started.unref();
    });
    const ended = (err: Error) => {
      if (this.#worker !== started) return; // 'error' and then 'exit': once
      this.#worker = undefined;
      const [reading] = this.#pending.keys();
      if (reading === undefined) return;
      this.#pending.get(reading)!.reject(err);
      this.#pending.delete(reading);
      if (this.#pending.size === 0) return;
      const next = this.#workerNow();
      for (const [id, job] of this.#pending) next.postMessage({ id, bytes: job.body });
    };
    started.on('error', ended);
    started.on('exit', (code) => ended(new Error(`the request reader exited (code ${code})`)));
    return started;
  }
}

const sharedReader = new ChatRequestReader();

/** The shape of a Chat Completions request body, read off the event loop (the shared reader). */
export function chatRequestShape(body: Uint8Array): Promise<ChatRequestShape> {
  return sharedReader.shape(body);
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
