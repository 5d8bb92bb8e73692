import { errorFromBody, isErrorBody, sdkError, UnauthorizedError } from './errors.js';

/** Ends every method's arguments: a deadline and a cancellation signal for that call. */
export interface RequestOpts {
  /** Give up on the call after this long; it rejects with the `TimeoutError` of `AbortSignal.timeout`. */
  timeoutMs?: number;
  /** Abort the call; it rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface ConnectionConfig {
  /** The daemon's base URL. */
  url: string;
  /** The API key sent as X-API-Key; undefined: keyed calls throw UnauthorizedError. */
  apiKey: string | undefined;
  /** The fetch to use (default: the global one). */
  fetch: typeof fetch;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface HttpRequest extends RequestOpts {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  query?: Query;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as bytes (application/octet-stream), possibly streamed. */
  bytes?: Uint8Array | Blob | ReadableStream<Uint8Array>;
  headers?: Record<string, string>;
  /** The route needs no key (`GET /health`). */
  anonymous?: boolean;
  /**
   * A 502/503/504 without an agentbox error body (a proxy's page while the daemon is away) is
   * `daemon_unreachable`, not `internal`, so that a caller retrying lost connections retries it.
   */
  gatewayUnreachable?: boolean;
}

/** The statuses a proxy answers with when the daemon behind it is down. */
const GATEWAY_STATUSES = new Set([502, 503, 504]);

/** The joined signal of a call's `signal` and `timeoutMs`, or undefined when it has neither. */
export function callSignal(opts: RequestOpts): AbortSignal | undefined {
  const signals = [
    ...(opts.signal ? [opts.signal] : []),
    ...(opts.timeoutMs !== undefined ? [AbortSignal.timeout(opts.timeoutMs)] : []),
  ];
  if (signals.length <= 1) return signals[0];
  return AbortSignal.any(signals);
}

/**
 * Whether a failure is the call's abort: the signal aborted (its reason, e.g. the caller's own
 * Error, is what the call rejects with), or an abort error of a fetch that was given no signal.
 */
const isAbort = (err: unknown, signal: AbortSignal | undefined) =>
  signal?.aborted === true ||
  (err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError'));

/** What an aborted call rejects with: the signal's reason when it aborted, else `err`. */
const abortReason = (err: unknown, signal: AbortSignal | undefined): unknown =>
  signal?.aborted ? signal.reason : err;

/** One HTTP exchange with the daemon: errors come back as the typed classes of their codes. */
export class HttpTransport {
  /** The daemon's base URL. */
  readonly url: string;
  // Private fields: console.log, util.inspect and JSON.stringify of a client, a box or its parts
  // must not print the key.
  readonly #apiKey: string | undefined;
  readonly #fetch: typeof fetch;

  constructor(config: ConnectionConfig) {
    this.url = config.url;
    this.#apiKey = config.apiKey;
    this.#fetch = config.fetch;
  }

  urlOf(path: string, query: Query = {}): string {
    const url = new URL(`${this.url}${path}`);
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }

  /** The response of a successful call (2xx); anything else throws. */
  async request(req: HttpRequest): Promise<Response> {
    const headers: Record<string, string> = { ...req.headers };
    if (!req.anonymous) {
      if (!this.#apiKey)
        throw new UnauthorizedError(
          'no API key: pass `apiKey` or set AGENTBOX_API_KEY (`agentbox keys create` makes one)',
        );
      headers['x-api-key'] = this.#apiKey;
    }
    let body: RequestInit['body'];
    if (req.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(req.json);
    } else if (req.bytes !== undefined) {
      headers['content-type'] = 'application/octet-stream';
      body = req.bytes;
    }
    const signal = callSignal(req);
    let res: Response;
    try {
      res = await this.#fetch(this.urlOf(req.path, req.query), {
        method: req.method,
        headers,
        ...(body === undefined ? {} : { body }),
        ...(req.bytes instanceof ReadableStream ? { duplex: 'half' } : {}),
        ...(signal ? { signal } : {}),
        // fetch would send X-API-Key on to wherever a redirect points, another origin too.
        redirect: 'manual',
      });
    } catch (err) {
      if (isAbort(err, signal)) throw abortReason(err, signal);
      throw unreachable(this.url, err);
    }
    // A browser shows a redirect as an opaque response (status 0); node as the 3xx itself.
    if (res.type === 'opaqueredirect' || (res.status >= 300 && res.status < 400)) {
      await res.body?.cancel().catch(() => undefined);
      const to = res.headers.get('location');
      throw sdkError(
        'daemon_unreachable',
        `${this.url} answered with a redirect${to ? ` to ${to}` : ''}, which the SDK does not follow ` +
          '(the API key would go with it): set the URL to the daemon itself',
        { httpStatus: res.status },
      );
    }
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      if (signal?.aborted) throw signal.reason;
      const error = errorFromBody(res.status, text, res.headers.get('x-request-id'));
      if (req.gatewayUnreachable && GATEWAY_STATUSES.has(res.status) && !isErrorBody(text))
        throw sdkError(
          'daemon_unreachable',
          `cannot reach the daemon at ${this.url} (a proxy answered ${res.status})`,
          { requestId: error.requestId, httpStatus: res.status, cause: error },
        );
      throw error;
    }
    return res;
  }

  async json<T>(req: HttpRequest): Promise<T> {
    return (await (await this.request(req)).json()) as T;
  }
}

/** The `daemon_unreachable` error for a failed connection to `url`. */
export function unreachable(url: string, err: unknown) {
  const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
  const why =
    typeof cause?.code === 'string'
      ? cause.code
      : typeof cause?.message === 'string'
        ? cause.message
        : (err as Error).message;
  return sdkError(
    'daemon_unreachable',
    `cannot reach the daemon at ${url} (${why}); is \`agentbox serve\` running?`,
    { cause: err },
  );
}

/**
 * The lines of an NDJSON body as parsed values. The daemon ends every line with a newline, so a
 * trailing fragment is a cut stream and is dropped; a connection lost while reading is
 * `daemon_unreachable`, and an abort of `signal` (the request's) rejects with its reason.
 */
export async function* ndjsonLines(
  body: ReadableStream<Uint8Array> | null,
  url: string,
  signal: AbortSignal | undefined,
): AsyncGenerator<unknown> {
  if (!body) return;
  const decoder = new TextDecoder();
  let buffered = '';
  const reader = body.getReader();
  try {
    for (;;) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (isAbort(err, signal)) throw abortReason(err, signal);
        throw sdkError(
          'daemon_unreachable',
          `the connection to the daemon at ${url} was cut (${(err as Error).message})`,
          { cause: err },
        );
      }
      if (chunk.done) return;
      buffered += decoder.decode(chunk.value, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim()) yield JSON.parse(line);
      }
    }
  } finally {
    // Stops the download when the consumer leaves early.
    await reader.cancel().catch(() => undefined);
  }
}
