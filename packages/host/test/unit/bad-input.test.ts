import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentboxError } from '@agentbox/protocol';
import type { Image, VmResources } from '@agentbox/vm';
import { FakeBackend } from '@agentbox/vm/fake';
import { agentBundlePath, errorCode, fakeHost, type FakeHost } from '../helpers/fake-host.js';

describe('bad input is refused per endpoint with the right status and code; the daemon keeps serving', () => {
  let h: FakeHost;
  let box: string;
  beforeAll(async () => {
    h = await fakeHost();
    const r = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { userId: 'dora' } });
    box = r.json<{ id: string }>().id;
  });
  afterAll(async () => {
    expect((await h.call({ method: 'GET', url: '/health' })).statusCode).toBe(200);
    await h.close();
  });

  const expectError = async (
    request: Parameters<FakeHost['admin_']>[0],
    status: number,
    code: string,
    field?: string,
  ) => {
    const r = await h.admin_(request);
    expect(r.statusCode, `${request.method} ${JSON.stringify(request.url)} ${r.body}`).toBe(status);
    expect(errorCode(r)).toBe(code);
    if (field) expect(r.json<{ error: { message: string } }>().error.message).toContain(field);
    return r;
  };

  it.each([
    [{}, 'user_id'],
    [{ runtime: 'python', env_vars: {} }, 'user_id'],
    [{ user_id: 'x', env_vars: {} }, 'runtime'],
    [{ user_id: 'x', runtime: 'cobol', env_vars: {} }, 'runtime'],
    [{ user_id: 42, runtime: 'python' }, 'user_id'],
    [{ user_id: 'x', runtime: 'python', env_vars: { '1BAD': 'v' } }, 'env_vars'],
    [{ user_id: 'x', runtime: 'python', env_vars: { OK: 1 } }, 'env_vars'],
    [{ user_id: 'x', runtime: 'python', surprise: true }, 'surprise'],
    [{ user_id: '../../etc', runtime: 'python' }, 'user_id'],
  ])('POST /create_microvm %j → 400 invalid_request naming %s', async (payload, field) => {
    await expectError({ method: 'POST', url: '/create_microvm', payload }, 400, 'invalid_request', field);
  });

  it('POST /create_microvm: not JSON, empty, wrong type → 400/415', async () => {
    await expectError(
      {
        method: 'POST',
        url: '/create_microvm',
        payload: '{"user_id":',
        headers: { 'content-type': 'application/json' },
      },
      400,
      'invalid_request',
    );
    await expectError(
      { method: 'POST', url: '/create_microvm', payload: [] },
      400,
      'invalid_request',
      '(body)',
    );
    await expectError(
      {
        method: 'POST',
        url: '/create_microvm',
        payload: 'user_id=x',
        headers: { 'content-type': 'text/plain' },
      },
      400,
      'invalid_request',
      '(body)',
    );
    await expectError(
      {
        method: 'POST',
        url: '/create_microvm',
        payload: '<x/>',
        headers: { 'content-type': 'application/xml' },
      },
      415,
      'unsupported_media_type',
    );
  });

  it('refuses huge bodies with 413 payload_too_large', async () => {
    const env_vars = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`K${i}`, 'x'.repeat(100_000)]));
    await expectError(
      { method: 'POST', url: '/create_microvm', payload: { user_id: 'big', runtime: 'bash', env_vars } },
      413,
      'payload_too_large',
    );
    await expectError(
      {
        method: 'POST',
        url: `/v1/boxes/${box}/exec`,
        payload: { command: 'true', stdin: 'A'.repeat(13 * 1024 * 1024) },
      },
      413,
      'payload_too_large',
    );
  });

  it.each([
    ['/list_workspace_files', 'user_id'],
    ['/list_workspace_files?user_id=', 'user_id'],
    ['/list_workspace_files?user_id=dora&extra=1', 'extra'],
    ['/list_processes', 'user_id'],
    ['/download_file?user_id=dora', 'filename'],
    ['/download_file?filename=a.txt', 'user_id'],
  ])('GET %s → 400 naming %s', async (url, field) => {
    await expectError({ method: 'GET', url }, 400, 'invalid_request', field);
  });

  it.each(['../secret', '/etc/passwd', 'a/../../b', 'a/..', '..\\..\\x'])(
    'GET /download_file filename=%s → 400 path_outside_workspace',
    async (filename) => {
      await expectError(
        { method: 'GET', url: `/download_file?user_id=dora&filename=${encodeURIComponent(filename)}` },
        400,
        'path_outside_workspace',
      );
    },
  );

  it('unknown users and boxes → 404 box_not_found', async () => {
    for (const [method, url, payload] of [
      ['GET', '/list_workspace_files?user_id=nobody'],
      ['GET', '/list_processes?user_id=nobody'],
      ['GET', '/download_file?user_id=nobody&filename=a'],
      ['POST', '/kill_microvm', { user_id: 'nobody' }],
      ['GET', '/v1/boxes/box-0000000000'],
      ['DELETE', '/v1/boxes/box-0000000000'],
      ['POST', '/v1/boxes/box-0000000000/exec', { command: 'true' }],
      ['GET', '/v1/boxes/box-0000000000/files?path=a'],
      ['PUT', '/v1/boxes/box-0000000000/files?path=a'],
      ['DELETE', '/v1/boxes/box-0000000000/files?path=a'],
      ['GET', '/v1/boxes/box-0000000000/processes'],
      ['DELETE', '/v1/boxes/box-0000000000/processes/12'],
    ] as const) {
      const headers = method === 'PUT' ? { 'content-type': 'application/octet-stream' } : undefined;
      await expectError(
        {
          method,
          url,
          ...(payload ? { payload } : method === 'PUT' ? { payload: 'x' } : {}),
          ...(headers ? { headers } : {}),
        },
        404,
        'box_not_found',
      );
    }
  });

  it('malformed box ids and pids → 400 naming the path parameter', async () => {
    await expectError({ method: 'GET', url: '/v1/boxes/not-a-box' }, 400, 'invalid_request', 'id');
    await expectError(
      { method: 'DELETE', url: `/v1/boxes/${box}/processes/abc` },
      400,
      'invalid_request',
      'pid',
    );
    await expectError(
      { method: 'DELETE', url: `/v1/boxes/${box}/processes/-1` },
      400,
      'invalid_request',
      'pid',
    );
    await expectError(
      { method: 'DELETE', url: `/v1/boxes/${box}/processes/5?signal=KILL` },
      400,
      'invalid_request',
      'signal',
    );
  });

  it.each([
    [{}, 'argv'],
    [{ argv: [], command: 'x' }, 'argv'],
    [{ argv: ['ls'], command: 'ls' }, 'argv'],
    [{ command: 'ls', timeoutMs: 'soon' }, 'timeoutMs'],
    [{ command: 'ls', timeoutMs: -5 }, 'timeoutMs'],
    [{ command: 'ls', env: { 'A-B': 'x' } }, 'env'],
    [{ command: 'ls', shell: true }, 'shell'],
  ])('POST /v1/boxes/:id/exec %j → 400 naming %s', async (payload, field) => {
    await expectError(
      { method: 'POST', url: `/v1/boxes/${box}/exec`, payload },
      400,
      'invalid_request',
      field,
    );
  });

  it('exec query and /v1/boxes body are checked too', async () => {
    await expectError(
      { method: 'POST', url: `/v1/boxes/${box}/exec?stream=maybe`, payload: { command: 'true' } },
      400,
      'invalid_request',
      'stream',
    );
    await expectError(
      { method: 'POST', url: '/v1/boxes', payload: { memoryMib: 64 } },
      400,
      'invalid_request',
      'memoryMib',
    );
    await expectError(
      { method: 'POST', url: '/v1/boxes', payload: { vcpus: 1.5 } },
      400,
      'invalid_request',
      'vcpus',
    );
    await expectError(
      { method: 'POST', url: '/v1/boxes', payload: { ttlSeconds: 0 } },
      400,
      'invalid_request',
      'ttlSeconds',
    );
    await expectError(
      { method: 'POST', url: '/v1/boxes', payload: { labels: { a: 1 } } },
      400,
      'invalid_request',
      'labels',
    );
    await expectError(
      { method: 'POST', url: '/v1/boxes', payload: { name: 'x' } },
      400,
      'invalid_request',
      'name',
    );
  });

  it('query numbers that are not whole numbers, or out of range → 400 saying so, naming the field', async () => {
    const cases: [string, string][] = [
      ['/v1/tasks?limit=abc', 'limit: must be a whole number'],
      ['/v1/tasks?limit=1.5', 'limit: must be a whole number'],
      ['/v1/tasks?limit=5000', 'limit: must be at most 1000'],
      [`/v1/boxes/${box}/egress?after=-1`, 'after: must be at least 0'],
      ['/v1/tasks/task-0123456789ab/events?after=x', 'after: must be a whole number'],
    ];
    for (const [url, message] of cases) {
      const r = await expectError({ method: 'GET', url }, 400, 'invalid_request');
      expect(r.json<{ error: { message: string } }>().error.message).toBe(`invalid query: ${message}`);
    }
  });

  it('/v1 file paths: ".." refused, missing path refused, uploads must be bytes', async () => {
    for (const method of ['GET', 'PUT', 'DELETE'] as const) {
      await expectError(
        {
          method,
          url: `/v1/boxes/${box}/files?path=${encodeURIComponent('../etc/passwd')}`,
          ...(method === 'PUT'
            ? { payload: 'x', headers: { 'content-type': 'application/octet-stream' } }
            : {}),
        },
        400,
        'path_outside_workspace',
      );
      await expectError({ method, url: `/v1/boxes/${box}/files` }, 400, 'invalid_request', 'path');
    }
    await expectError(
      { method: 'PUT', url: `/v1/boxes/${box}/files?path=a.json`, payload: { a: 1 } },
      415,
      'unsupported_media_type',
    );
    await expectError(
      { method: 'GET', url: `/v1/boxes/${box}/files?path=no/such/file` },
      404,
      'file_not_found',
    );
    // The workspace and / in any spelling: a trailing slash once got past the guard.
    for (const p of ['.', './', './/', '/', '//'])
      await expectError(
        { method: 'DELETE', url: `/v1/boxes/${box}/files?path=${encodeURIComponent(p)}` },
        400,
        'invalid_request',
      );
  });

  it('unknown routes → 404 route_not_found; unknown process → 404 process_not_found', async () => {
    await expectError({ method: 'GET', url: '/v2/everything' }, 404, 'route_not_found');
    await expectError({ method: 'PATCH', url: '/v1/boxes' }, 404, 'route_not_found');
    await expectError(
      { method: 'DELETE', url: `/v1/boxes/${box}/processes/999999` },
      404,
      'process_not_found',
    );
  });
});

describe('resources the image cannot have are refused before a box exists', () => {
  it('POST /v1/boxes with a disk smaller than the image → 400 invalid_request; no box is recorded', async () => {
    const backend = Object.assign(new FakeBackend({ agentBundlePath }), {
      // As the QEMU driver answers for a 1.2 GiB root filesystem.
      checkResources: (_image: Image, resources: VmResources) =>
        resources.diskGib < 2
          ? Promise.reject(new AgentboxError('invalid_request', 'a disk of 1 GiB is smaller than the image'))
          : Promise.resolve(),
    });
    const h = await fakeHost({ backend });
    try {
      const r = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { diskGib: 1 } });
      expect(r.statusCode).toBe(400);
      expect(errorCode(r)).toBe('invalid_request');
      expect(r.json<{ error: { message: string } }>().error.message).toMatch(/smaller than the image/);
      expect(h.host.store.live()).toEqual([]);
      const ok = await h.admin_({ method: 'POST', url: '/v1/boxes', payload: { diskGib: 2 } });
      expect(ok.statusCode).toBe(201);
    } finally {
      await h.close();
    }
  });
});
