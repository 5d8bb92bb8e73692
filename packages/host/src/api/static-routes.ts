import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { AgentboxError } from '@agentbox/protocol';

/**
 * The web dashboard: the static files `packages/dashboard` builds, served without a key (the
 * page asks for one and sends it with every API call). They are not part of the API: no
 * operationId, not in the OpenAPI document.
 */

/** `packages/dashboard/dist`, from `packages/host/{src,dist}/api/`. */
export const DEFAULT_DASHBOARD_DIR = fileURLToPath(new URL('../../../dashboard/dist', import.meta.url));

/** Paths of the dashboard's own pages (client-side routes): each is answered with index.html. */
export const DASHBOARD_PAGES = ['/', '/boxes', '/boxes/*', '/tasks', '/tasks/*', '/keys'] as const;

const ASSET_TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
};

/** Vite's hashed asset names: no dot first, no separators (so never `..`). */
const ASSET_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

const PAGE_HEADERS = {
  'cache-control': 'no-cache',
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

const NOT_BUILT = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agentbox</title></head>
<body>
<h1>agentbox</h1>
<p>The daemon is running, but its web dashboard has not been built. In the agentbox checkout run</p>
<pre>npm run build</pre>
<p>(or only the dashboard: <code>npm run build -w packages/dashboard</code>), then reload this page.
The HTTP API works without it: see <code>/health</code> and <code>/openapi.json</code>.</p>
</body></html>
`;

export interface DashboardOptions {
  /** The built dashboard (index.html + assets/); read on each request, so a rebuild shows at once. */
  dir: string;
}

/** Registers `GET /`, the dashboard's page paths and `GET /assets/:file`. */
export function registerDashboard(app: FastifyInstance, options: DashboardOptions): void {
  const sendPage = async (reply: FastifyReply) => {
    const html = await fs.readFile(path.join(options.dir, 'index.html')).catch(() => undefined);
    if (!html) return reply.code(503).type('text/html; charset=utf-8').headers(PAGE_HEADERS).send(NOT_BUILT);
    return reply.code(200).type('text/html; charset=utf-8').headers(PAGE_HEADERS).send(html);
  };
  for (const url of DASHBOARD_PAGES) app.get(url, (_request, reply) => sendPage(reply));

  app.get<{ Params: { file: string } }>('/assets/:file', async (request, reply) => {
    const { file } = request.params;
    const type = ASSET_TYPES[path.extname(file)];
    const bytes =
      type && ASSET_NAME.test(file)
        ? await fs.readFile(path.join(options.dir, 'assets', file)).catch(() => undefined)
        : undefined;
    if (!type || !bytes) throw new AgentboxError('route_not_found', `no dashboard file /assets/${file}`);
    return reply
      .type(type)
      .headers({
        'cache-control': 'public, max-age=31536000, immutable',
        'x-content-type-options': 'nosniff',
      })
      .send(bytes);
  });
}
