import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentboxError, ERROR_CODE_LIST, ERROR_CODES } from '@agentbox/protocol';
import * as sdk from '../../src/index.js';
import {
  AgentboxClient,
  AgentboxSdkError,
  DaemonUnreachableError,
  ERROR_CLASSES,
  ForbiddenError,
  GuestError,
  InternalError,
  LibraryItemNotFoundError,
  Sandbox,
  UnauthorizedError,
  errorClassOf,
} from '../../src/index.js';
import { errorClassName, errorFromBody } from '../../src/errors.js';
import { deadUrl, sdkDaemon, type SdkDaemon } from '../helpers/sdk-daemon.js';

describe('error classes', () => {
  it('one named, exported class per code of the registry, all AgentboxSdkError and AgentboxError', () => {
    for (const code of ERROR_CODE_LIST) {
      const name = errorClassName(code);
      const cls = (sdk as Record<string, unknown>)[name];
      expect(cls, name).toBe(ERROR_CLASSES[code]);
      expect(errorClassOf(code)).toBe(cls);
      const err = new ERROR_CLASSES[code]('boom', { requestId: 'req_1' });
      expect(err).toBeInstanceOf(AgentboxSdkError);
      expect(err).toBeInstanceOf(AgentboxError);
      expect(err).toBeInstanceOf(Error);
      expect(err).toMatchObject({ name, code, message: 'boom', requestId: 'req_1' });
      expect(err.status).toBe(ERROR_CODES[code].status);
    }
    expect(Object.keys(ERROR_CLASSES).sort()).toEqual([...ERROR_CODE_LIST].sort());
    expect(errorClassName('box_not_found')).toBe('BoxNotFoundError');
    expect(errorClassName('guest_error')).toBe('GuestError');
  });

  it('maps an error body to its class, keeping details, the field and the request id', () => {
    const body = {
      error: {
        code: 'invalid_request',
        message: 'invalid body: memoryMib: too small',
        details: { in: 'body', issues: [{ field: 'memoryMib', message: 'too small' }] },
        requestId: 'req_9',
      },
    };
    const err = errorFromBody(400, JSON.stringify(body));
    expect(err).toBeInstanceOf(sdk.InvalidRequestError);
    expect(err).toMatchObject({
      field: 'memoryMib',
      requestId: 'req_9',
      status: 400,
      details: body.error.details,
    });
  });

  it('a body that is not an error body is internal with the status received', () => {
    const err = errorFromBody(502, '<html>bad gateway</html>', 'req_h');
    expect(err).toBeInstanceOf(sdk.InternalError);
    expect(err).toMatchObject({ status: 502, requestId: 'req_h', field: undefined });
    expect(err.message).toMatch(/^daemon answered 502: <html>/);
    // A code this SDK does not know (a newer daemon) keeps the message.
    const newer = errorFromBody(
      409,
      JSON.stringify({ error: { code: 'brand_new', message: 'm', requestId: 'r' } }),
    );
    expect(newer).toMatchObject({ code: 'internal', message: 'm', status: 409, requestId: 'r' });
  });
});

describe('errors from a daemon', () => {
  let d: SdkDaemon;
  beforeAll(async () => {
    d = await sdkDaemon();
  });
  afterAll(() => d.close());

  it('no daemon at the URL: DaemonUnreachableError naming the URL', async () => {
    const url = await deadUrl();
    const err = await Sandbox.list({ client: new AgentboxClient({ url, apiKey: 'k' }) }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DaemonUnreachableError);
    expect(err).toMatchObject({ code: 'daemon_unreachable', status: 503 });
    expect((err as Error).message).toBe(
      `cannot reach the daemon at ${url} (ECONNREFUSED); is \`agentbox serve\` running?`,
    );
  });

  it('no key: UnauthorizedError before any request; a wrong key: the daemon’s UnauthorizedError', async () => {
    const none = new AgentboxClient({ url: d.url }, {});
    const local = await none.boxes.list().catch((e: unknown) => e);
    expect(local).toBeInstanceOf(UnauthorizedError);
    expect((local as Error).message).toMatch(/AGENTBOX_API_KEY/);
    expect(await none.health()).toMatchObject({ status: 'ok' });
    const wrong = await new AgentboxClient({ url: d.url, apiKey: 'abk_wrong' }).boxes
      .list()
      .catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(UnauthorizedError);
    expect(wrong).toMatchObject({ status: 401, requestId: expect.stringMatching(/^req_/) });
  });

  it('a user key may not write the library: ForbiddenError', async () => {
    const user = d.fake.host.keys.create({ name: 'user', scope: 'user' }).secret;
    const err = await new AgentboxClient({ url: d.url, apiKey: user }).library
      .put({ kind: 'rules', name: 'x' }, { 'RULES.md': '# r\n' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ForbiddenError);
  });

  it('timeoutMs and signal abort a call with the standard abort errors', async () => {
    const client = new AgentboxClient({ url: d.url, apiKey: d.admin });
    const controller = new AbortController();
    controller.abort();
    await expect(client.boxes.list({ signal: controller.signal })).rejects.toMatchObject({
      name: 'AbortError',
    });
    const box = await client.boxes.create();
    await expect(box.commands.run('sleep 5', { signal: AbortSignal.timeout(200) })).rejects.toMatchObject({
      name: 'TimeoutError',
    });
    await box.kill();
  });

  it('a signal aborted with a reason rejects with that reason: before, awaiting and reading the response', async () => {
    const client = new AgentboxClient({ url: d.url, apiKey: d.admin });
    const reason = new Error('user cancelled');
    const before = new AbortController();
    before.abort(reason);
    await expect(client.boxes.list({ signal: before.signal })).rejects.toBe(reason);

    // A daemon that takes the request and never answers.
    const silent = http.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const awaiting = new AbortController();
    const pending = new AgentboxClient({ url, apiKey: 'k' }).boxes.list({ signal: awaiting.signal });
    setTimeout(() => awaiting.abort(reason), 50);
    await expect(pending).rejects.toBe(reason);
    silent.closeAllConnections();
    silent.close();

    // Mid-stream: the exec output is being read.
    const box = await client.boxes.create();
    const reading = new AbortController();
    await expect(
      box.commands.run('sleep 5', { signal: reading.signal, onStart: () => reading.abort(reason) }),
    ).rejects.toBe(reason);
    await box.kill();
  });

  it('a redirect is not followed: the API key never reaches the other address', async () => {
    const keysSeen: (string | undefined)[] = [];
    const elsewhere = http.createServer((req, res) => {
      keysSeen.push(req.headers['x-api-key'] as string | undefined);
      res.end('[]');
    });
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
    const target = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}`;
    const redirecting = http.createServer((req, res) => {
      res.writeHead(307, { location: `${target}${req.url}` });
      res.end();
    });
    await new Promise<void>((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(redirecting.address() as AddressInfo).port}`;
    const listed = new AgentboxClient({ url, apiKey: 'abk_secret' }).boxes.list();
    await expect(listed).rejects.toBeInstanceOf(DaemonUnreachableError);
    await expect(listed).rejects.toThrow(/redirect to http:\/\/127\.0\.0\.1:\d+\/v1\/boxes/);
    expect(keysSeen).toEqual([]);
    for (const server of [elsewhere, redirecting]) {
      server.closeAllConnections();
      server.close();
    }
  });

  it('an exec error event with a code this SDK does not know is InternalError keeping the message', async () => {
    let execBody = '';
    // The daemon's answers, but for /exec: a newer daemon's stream.
    const client = new AgentboxClient({
      url: d.url,
      apiKey: d.admin,
      fetch: (input, init) =>
        (input as string).endsWith('/exec')
          ? Promise.resolve(new Response(execBody, { headers: { 'content-type': 'application/x-ndjson' } }))
          : fetch(input, init),
    });
    const box = await client.boxes.create();
    const stream = (error: object) =>
      `${JSON.stringify({ type: 'started', pid: 1 })}\n${JSON.stringify({ type: 'error', error })}\n`;
    execBody = stream({ code: 'brand_new', message: 'a new failure', requestId: 'req_1' });
    const newer = await box.commands.run('true').catch((e: unknown) => e);
    expect(newer).toBeInstanceOf(InternalError);
    expect(newer).toMatchObject({ code: 'internal', message: 'a new failure', requestId: 'req_1' });
    // A known code is its class, with the details.
    execBody = stream({ code: 'guest_error', message: 'm', details: { errno: 5 }, requestId: 'req_2' });
    const known = await box.commands.run('true').catch((e: unknown) => e);
    expect(known).toBeInstanceOf(GuestError);
    expect(known).toMatchObject({ message: 'm', details: { errno: 5 }, requestId: 'req_2', status: 500 });
    await box.kill();
  });

  it('library: put, get, list, remove; a removed item is LibraryItemNotFoundError', async () => {
    const client = new AgentboxClient({ url: d.url, apiKey: d.admin });
    const ref = { kind: 'rules', name: 'house-style', namespace: 'proj' } as const;
    const put = await client.library.put(ref, { 'RULES.md': '# Use tabs\n' });
    expect(put).toMatchObject({
      kind: 'rules',
      namespace: 'proj',
      name: 'house-style',
      sha256: expect.any(String),
    });
    expect(await client.library.get(ref)).toMatchObject({ files: { 'RULES.md': '# Use tabs\n' } });
    expect(await client.library.list({ kind: 'rules' })).toEqual([put]);
    await client.library.remove(ref);
    expect(await client.library.list()).toEqual([]);
    const gone = await client.library.get(ref).catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(LibraryItemNotFoundError);
  });
});
