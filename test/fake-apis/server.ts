import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

/** One HTTP request a fake API received, kept for assertions. */
export interface RecordedRequest {
  method: string;
  /** Path and query as sent (`/v1/messages?beta=true`). */
  url: string;
  /** Path without the query. */
  path: string;
  headers: http.IncomingHttpHeaders;
  /** The body parsed as JSON, or undefined when it was empty or not JSON. */
  body: unknown;
  rawBody: string;
}

export interface FakeServerOptions {
  /**
   * Serve HTTPS with this key and certificate (PEM), or with these full server options (SNI
   * callback, …). The egress gateway forwards the terminated TLS of a box over TLS, so a fake reached
   * through it as `api.anthropic.com` needs a certificate from the test CA for that name.
   */
  tls?: https.ServerOptions;
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Port; default 0 (any free port). */
  port?: number;
}

export interface FakeServer {
  readonly port: number;
  /** `http://127.0.0.1:PORT` or `https://…`, without a trailing slash. */
  readonly url: string;
  /** Every request received, in arrival order (including ones the fake answered with an error). */
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

export type Respond = (req: RecordedRequest, res: http.ServerResponse) => void;

function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** An HTTP/1.1 server (plain or TLS) that records each request before `respond` answers it. */
export async function startFakeServer(options: FakeServerOptions, respond: Respond): Promise<FakeServer> {
  const requests: RecordedRequest[] = [];
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      const url = req.url ?? '/';
      const recorded: RecordedRequest = {
        method: req.method ?? '',
        url,
        path: url.split('?')[0] ?? url,
        headers: req.headers,
        body: parseJson(rawBody),
        rawBody,
      };
      requests.push(recorded);
      try {
        respond(recorded, res);
      } catch (err) {
        sendJson(res, 500, { type: 'error', error: { type: 'api_error', message: String(err) } });
      }
    });
  };
  const server = options.tls ? https.createServer(options.tls, onRequest) : http.createServer(onRequest);
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    port,
    url: `${options.tls ? 'https' : 'http'}://${urlHost}:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Starts a `text/event-stream` answer; `send` writes one event (with an `event:` line when named). */
export function startSse(res: http.ServerResponse): {
  send(event: string | null, data: unknown): void;
  end(): void;
} {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  return {
    send(event, data) {
      const head = event === null ? '' : `event: ${event}\n`;
      res.write(`${head}data: ${JSON.stringify(data)}\n\n`);
    },
    end() {
      res.end();
    },
  };
}

/** Rough token count for fake usage figures: 4 characters a token. */
export function roughTokens(value: unknown): number {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? '');
  return Math.max(1, Math.ceil(text.length / 4));
}
