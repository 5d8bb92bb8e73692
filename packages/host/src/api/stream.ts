import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';
import { AgentboxError } from '@agentbox/protocol';
import { errorBody, toAgentboxError } from './error-handler.js';

export type Write = (chunk: Buffer | string) => void | Promise<void>;

export interface StreamOptions {
  contentType: string;
  headers?: Record<string, string>;
  /** The last chunk of a stream that failed (or was ended by the daemon) after its first chunk. */
  lateError?: (err: unknown) => string;
  /**
   * Send the status and headers at once, not with the first chunk: for streams whose first chunk
   * may be far off (a queued task's events), once the caller has made every check that could fail.
   */
  headersFirst?: boolean;
}

/**
 * The last line of an NDJSON (or SSE) stream the daemon ended early (the key was revoked) or that
 * failed: `{type: 'error', error}`, as exec, command output and task event streams end. A task's
 * has no `seq` (it is no stored event; SSE sends it without an id, so Last-Event-ID still names the
 * last real event).
 */
export function streamErrorFrame(err: unknown, requestId: string, sse = false): string {
  const line = JSON.stringify({ type: 'error', error: errorBody(toAgentboxError(err), requestId).error });
  return sse ? `event: error\ndata: ${line}\n\n` : `${line}\n`;
}

const toError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));

/**
 * Why the daemon ended a request early, if it did: `signal` aborted with an AgentboxError as its
 * reason (its key was revoked). A client that went away aborts it without one.
 */
export function endedByDaemon(signal: AbortSignal): AgentboxError | undefined {
  return signal.aborted && signal.reason instanceof AgentboxError ? signal.reason : undefined;
}

/**
 * Streams a response produced by `run`. The status and headers are sent only once the first chunk
 * exists (or `run` finished), so an error before any output is still a proper JSON error; an error
 * after it is ended with `lateError`'s last chunk, or cuts the connection. When the daemon ends the
 * request (`signal` aborts with an AgentboxError) the stream ends at once the same way, whether or
 * not `run` has noticed yet; `run` gets the abort through `signal` too, and what it writes after is
 * dropped.
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
  let ended = false;
  const end = (err?: unknown) => {
    if (ended) return;
    ended = true;
    if (err === undefined) out.end();
    else if (options.lateError) out.end(options.lateError(err));
    else out.destroy(toError(err));
  };
  // The request's own signal: it lives as long as the request, and so does this listener.
  const daemonEnded = new Promise<AgentboxError>((resolve) => {
    const onAbort = () => {
      const reason = endedByDaemon(signal);
      if (reason) resolve(reason);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  const done = run(write);
  if (options.headersFirst) {
    // fastify sets the headers on the raw response, then pipes the body into it: flush them there.
    reply.raw.once('pipe', () => reply.raw.flushHeaders());
  } else {
    await Promise.race([firstChunk, done, daemonEnded]);
    const early = endedByDaemon(signal);
    if (early) {
      // Nothing was sent yet: the caller answers with the error itself; `run` winds down unheard.
      done.catch(() => undefined);
      throw early;
    }
  }
  void daemonEnded.then(end);
  done.then(
    () => end(endedByDaemon(signal)),
    (err: unknown) => end(endedByDaemon(signal) ?? err),
  );
  void reply.headers(options.headers ?? {});
  return reply.type(options.contentType).send(out);
}
