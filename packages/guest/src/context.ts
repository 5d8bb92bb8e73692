import type { GuestErrorCode } from '@agentbox/protocol';
import type { Mux } from '@agentbox/protocol/wire';

/** What a request handler may send on its channel. */
export type ChannelSender = Pick<
  Mux,
  'sendJson' | 'sendData' | 'sendDataFrom' | 'sendEnd' | 'post' | 'consumed' | 'sendsFromFds' | 'close'
>;

/** What a request handler gets: its channel and a way to answer on it. */
export interface RequestContext {
  /** Sends for this request only: once its host session is gone, nothing more goes out. */
  readonly mux: ChannelSender;
  readonly channel: number;
  /** The request's host session is still there (a new one, a restarted daemon, ends it). */
  isOpen(): boolean;
  /** From now on the request is not cancelled when its host session ends (a process it started runs on). */
  outliveHost(): void;
  /** Registers what to do when the host cancels the request. */
  onCancel(cb: () => void): void;
  /** Registers handlers for data the host streams on this channel (stdin, upload). */
  onData(cb: (chunk: Buffer) => void, onEnd: () => void): void;
  /** Registers a handler for other JSON control messages on the channel (pty resize). */
  onControl(cb: (message: unknown) => void): void;
}

/** A handler failure that maps to a guest error code instead of `guest_error`. */
export class GuestOpError extends Error {
  constructor(
    readonly code: GuestErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}
