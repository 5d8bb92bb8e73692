import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';

export type Write = (chunk: Buffer | string) => void | Promise<void>;

export interface StreamOptions {
  contentType: string;
  headers?: Record<string, string>;
  lateError?: (err: unknown) => string;
  /**
   * Send the status and headers at once, not with the first chunk: for streams whose first chunk
   * may be far off (a queued task's events), once the caller has made every check that could fail.
   */
  headersFirst?: boolean;
}

/**
 * Streams a response produced by `run`. The status and headers are sent only once the first chunk
 * exists (or `run` finished), so an error before any output is still a proper JSON error; an error
 * after it is ended with `lateError`'s last chunk, or cuts the connection.
 */
export async function streamResponse(
  reply: FastifyReply,
  signal: AbortSignal,
  options: StreamOptions,
  run: (write: Write) => Promise<unknown>,
): Promise<FastifyReply> {
  const out = new PassThrough();
  let first!: () => void;
  const firstChunk = new Promise<void>((resolve) => (first = resolve));
  const write: Write = (chunk) => {
    first();
    if (out.destroyed || signal.aborted) return;
    if (out.write(chunk)) return;
    return new Promise<void>((resolve) => {
      const done = () => {
        out.off('drain', done);
        out.off('close', done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      out.once('drain', done);
      out.once('close', done);
      signal.addEventListener('abort', done, { once: true });
    });
  };
  const done = run(write);
  if (options.headersFirst) {
    // fastify sets the headers on the raw response, then pipes the body into it: flush them there.
    reply.raw.once('pipe', () => reply.raw.flushHeaders());
  } else {
    await Promise.race([firstChunk, done]);
  }
  done.then(
    () => out.end(),
    (err: unknown) => {
      if (options.lateError) out.end(options.lateError(err));
      else out.destroy(err instanceof Error ? err : new Error(String(err)));
    },
  );
  void reply.headers(options.headers ?? {});
  return reply.type(options.contentType).send(out);
}
