import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

const INDEX =
  '<!doctype html><html><head><script type="module" src="/assets/index-Ab12_x.js"></script></head></html>';
const JS = 'console.log("dashboard");\n';
const CSS = 'body { margin: 0 }\n';

/** The dashboard's static files at `/` over the fake-driver daemon, from a stand-in build. */
describe('the dashboard served at /', () => {
  let dist: string;
  let h: FakeHost;
  beforeAll(async () => {
    dist = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-dashboard-'));
    fs.mkdirSync(path.join(dist, 'assets'));
    fs.writeFileSync(path.join(dist, 'index.html'), INDEX);
    fs.writeFileSync(path.join(dist, 'assets', 'index-Ab12_x.js'), JS);
    fs.writeFileSync(path.join(dist, 'assets', 'index-Cd34.css'), CSS);
    fs.writeFileSync(path.join(dist, 'secret.txt'), 'not an asset');
    h = await fakeHost({ dashboardDir: dist });
  });
  afterAll(async () => {
    await h.close();
    fs.rmSync(dist, { recursive: true, force: true });
  });

  it('serves index.html at / without a key, with a strict content security policy', async () => {
    const r = await h.call({ method: 'GET', url: '/' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(r.body).toBe(INDEX);
    expect(r.headers['cache-control']).toBe('no-cache');
    expect(r.headers['content-security-policy']).toContain("default-src 'self'");
    expect(r.headers['content-security-policy']).toContain("connect-src 'self'");
    expect(r.headers['x-content-type-options']).toBe('nosniff');
  });

  it("answers the dashboard's own page paths with index.html (client-side routes)", async () => {
    for (const url of [
      '/boxes',
      '/boxes/box-0123456789',
      '/tasks',
      '/tasks/task_abc',
      '/tasks?boxId=box-0123456789',
      '/keys',
    ]) {
      const r = await h.call({ method: 'GET', url });
      expect(r.statusCode, url).toBe(200);
      expect(r.headers['content-type'], url).toBe('text/html; charset=utf-8');
      expect(r.body, url).toBe(INDEX);
    }
  });

  it('serves hashed assets with their content type, cached for good', async () => {
    const js = await h.call({ method: 'GET', url: '/assets/index-Ab12_x.js' });
    expect(js.statusCode).toBe(200);
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(js.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(js.body).toBe(JS);
    const css = await h.call({ method: 'GET', url: '/assets/index-Cd34.css' });
    expect(css.headers['content-type']).toBe('text/css; charset=utf-8');
    expect(css.body).toBe(CSS);
    const head = await h.call({ method: 'HEAD', url: '/assets/index-Cd34.css' });
    expect(head.statusCode).toBe(200);
  });

  it('refuses anything else under /assets with the uniform 404 (no traversal, no unknown types)', async () => {
    for (const url of [
      '/assets/missing.js',
      '/assets/..%2Fsecret.txt',
      '/assets/%2E%2E%2Fsecret.txt',
      '/assets/.hidden.js',
      '/assets/index-Ab12_x.exe',
      '/assets/a/b.js',
    ]) {
      const r = await h.call({ method: 'GET', url });
      expect(r.statusCode, url).toBe(404);
      expect(errorCode(r), url).toBe('route_not_found');
      expect(r.body, url).not.toContain('not an asset');
    }
  });

  it('leaves the API as it was: unknown API paths are JSON 404s, keys are still required', async () => {
    const unknown = await h.call({ method: 'GET', url: '/v1/nope' });
    expect(unknown.statusCode).toBe(404);
    expect(errorCode(unknown)).toBe('route_not_found');
    const noKey = await h.call({ method: 'GET', url: '/v1/boxes' });
    expect(noKey.statusCode).toBe(401);
    expect((await h.admin_({ method: 'GET', url: '/v1/boxes' })).statusCode).toBe(200);
  });

  it('keeps the static files out of the API contract (routes table and OpenAPI document)', () => {
    const doc = h.host.openapi() as { paths: Record<string, unknown> };
    for (const p of ['/', '/boxes', '/boxes/*', '/tasks', '/tasks/*', '/keys', '/assets/{file}'])
      expect(Object.keys(doc.paths), p).not.toContain(p);
    expect(h.host.routes.some((r) => r.url === '/' || r.url.startsWith('/assets'))).toBe(false);
  });

  it('starts without a built dashboard; / then says how to build it', async () => {
    const bare = await fakeHost({ dashboardDir: path.join(dist, 'does-not-exist') });
    try {
      const r = await bare.call({ method: 'GET', url: '/' });
      expect(r.statusCode).toBe(503);
      expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(r.body).toContain('npm run build');
      expect((await bare.call({ method: 'GET', url: '/health' })).statusCode).toBe(200);
      expect(errorCode(await bare.call({ method: 'GET', url: '/assets/index-Ab12_x.js' }))).toBe(
        'route_not_found',
      );
    } finally {
      await bare.close();
    }
  });
});
