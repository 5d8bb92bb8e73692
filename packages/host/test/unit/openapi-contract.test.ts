import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '@agentbox/protocol';
import { fakeHost, type FakeHost } from '../helpers/fake-host.js';

const SPEC = fileURLToPath(new URL('../../../../spec/openapi.json', import.meta.url));

describe('the API contract: route lint and the committed OpenAPI document', () => {
  let h: FakeHost;
  beforeAll(async () => {
    h = await fakeHost();
  });
  afterAll(() => h.close());

  it('spec/openapi.json matches the code (UPDATE_SNAPSHOTS=1 re-blesses it)', () => {
    const generated = `${JSON.stringify(h.host.openapi(), null, 2)}\n`;
    if (process.env.UPDATE_SNAPSHOTS === '1') {
      fs.mkdirSync(path.dirname(SPEC), { recursive: true });
      fs.writeFileSync(SPEC, generated);
    }
    expect(fs.existsSync(SPEC), 'spec/openapi.json is missing: run UPDATE_SNAPSHOTS=1 npx vitest run').toBe(
      true,
    );
    expect(
      fs.readFileSync(SPEC, 'utf8') === generated,
      'spec/openapi.json has drifted from the zod schemas: review, then UPDATE_SNAPSHOTS=1 npx vitest run',
    ).toBe(true);
  });

  it('serves the same document at GET /openapi.json', async () => {
    const r = await h.admin_({ method: 'GET', url: '/openapi.json' });
    expect(r.json()).toEqual(JSON.parse(fs.readFileSync(SPEC, 'utf8')));
  });

  it('every route has a unique camelCase operationId, a summary, success responses and known error codes', () => {
    const ids = new Set<string>();
    for (const route of h.host.routes) {
      const name = `${route.method} ${route.url}`;
      expect(route.operationId, name).toMatch(/^[a-z][A-Za-z0-9]+$/);
      expect(ids.has(route.operationId), `${name}: duplicate operationId`).toBe(false);
      ids.add(route.operationId);
      expect(route.summary.length, name).toBeGreaterThan(5);
      const responses = Object.entries(route.responses);
      expect(responses.length, name).toBeGreaterThan(0);
      for (const [status, spec] of responses) {
        expect(Number(status), name).toBeGreaterThanOrEqual(200);
        expect(
          spec.schema !== undefined || (spec.contentType ?? 'application/json') !== 'application/json',
          name,
        ).toBe(true);
      }
      for (const code of route.errors)
        expect(Object.hasOwn(ERROR_CODES, code), `${name}: ${code}`).toBe(true);
      const urlParams = [...route.url.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]);
      const schemaParams = route.params
        ? Object.keys((route.params as unknown as { shape: object }).shape)
        : [];
      expect(schemaParams.sort(), `${name}: path parameters`).toEqual(urlParams.sort());
      expect(route.auth === 'none', name).toBe(route.url === '/health');
    }
  });

  it('documents every route, its key requirement and the error body', () => {
    const doc = h.host.openapi() as {
      paths: Record<string, Record<string, { security: unknown[]; responses: Record<string, unknown> }>>;
    };
    for (const route of h.host.routes) {
      const op = doc.paths[route.url.replace(/:([A-Za-z_]+)/g, '{$1}')]?.[route.method.toLowerCase()];
      expect(op, route.operationId).toBeDefined();
      expect(op!.security.length, route.operationId).toBe(route.auth === 'none' ? 0 : 1);
      if (route.auth !== 'none') expect(op!.responses['401'], route.operationId).toBeDefined();
    }
  });
});
