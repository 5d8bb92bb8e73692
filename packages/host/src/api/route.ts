import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { AgentboxError, type ErrorCode } from '@agentbox/protocol';
import type { Actor } from '../store/key-store.js';
import { endedByDaemon } from './stream.js';

export type AuthLevel = 'none' | 'key' | 'admin';
export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface ResponseSpec {
  description: string;
  /** JSON body schema; omit for non-JSON bodies and give `contentType`. */
  schema?: z.ZodType;
  /** Default `application/json`. */
  contentType?: string;
  /** Further content types the same status may carry, e.g. a JSON listing instead of bytes. */
  alternatives?: { contentType: string; schema?: z.ZodType }[];
}

export interface RouteContext<Q, P, B> {
  query: Q;
  params: P;
  body: B;
  /** The authenticated key; for `auth: 'none'` routes an anonymous user actor. */
  actor: Actor;
  request: FastifyRequest;
  reply: FastifyReply;
  /**
   * Aborted when the client goes away before the response ended, or when the key is found revoked
   * while the request lasts (then with an `unauthorized` AgentboxError as the reason: a stream ends
   * with it, a response not yet sent is that error).
   */
  signal: AbortSignal;
}

/**
 * One endpoint: its contract (schemas, auth, documented errors) and a thin handler that makes one
 * service call. The same table registers the fastify routes and generates the OpenAPI document.
 */
export interface RouteDef<Q = unknown, P = unknown, B = unknown> {
  method: HttpMethod;
  /** fastify syntax: `/v1/boxes/:id`. */
  url: string;
  operationId: string;
  summary: string;
  tags: string[];
  auth: AuthLevel;
  query?: z.ZodType<Q>;
  params?: z.ZodType<P>;
  /** JSON body schema. */
  body?: z.ZodType<B>;
  /** A streamed, unparsed body (the handler gets a Readable). */
  rawBody?: { contentType: string; description: string };
  /** Largest JSON body accepted; the daemon's default otherwise. */
  bodyLimit?: number;
  /** Success responses; the handler's return value is sent with the first status. */
  responses: Record<number, ResponseSpec>;
  /** Error codes this endpoint can answer with (documented in OpenAPI). */
  errors: ErrorCode[];
  /** Returns the JSON body, or `ctx.reply` when it has sent the response itself. */
  handler: (ctx: RouteContext<Q, P, B>) => Promise<unknown>;
}

/** Keeps the inferred types of a route definition. */
export function defineRoute<Q = undefined, P = undefined, B = undefined>(def: RouteDef<Q, P, B>): RouteDef {
  return def as unknown as RouteDef;
}

const ANONYMOUS: Actor = { keyId: 'anonymous', scope: 'user' };

function fieldOf(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return issue.keys.join(', ');
  return issue.path.map(String).join('.') || '(body)';
}

/** Parses one part of a request; a violation is a 400 that names the field(s). */
export function parsePart<T>(schema: z.ZodType<T> | undefined, value: unknown, where: string): T {
  if (!schema) return undefined as T;
  const result = schema.safeParse(value ?? (where === 'body' ? undefined : {}));
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => ({
    field: fieldOf(issue),
    message: issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message,
  }));
  const text = issues.map((i) => `${i.field}: ${i.message}`).join('; ');
  throw new AgentboxError('invalid_request', `invalid ${where}: ${text}`, {
    details: { in: where, issues },
  });
}

export interface RegisterOptions {
  authenticate: (secret: string) => Actor | undefined;
  /**
   * Calls `onRevoked` once the key is found revoked (re-checked every few seconds, since another
   * process may revoke it); returns the unsubscribe.
   */
  watchKey: (keyId: string, onRevoked: () => void) => () => void;
  /** Parse every JSON response through its schema (tests turn this on). */
  validateResponses: boolean;
  /** Requests get 503 while the daemon shuts down. */
  closing: () => boolean;
}

function secretOf(request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key'];
  return Array.isArray(header) ? header[0] : header;
}

function authorize(def: RouteDef, request: FastifyRequest, options: RegisterOptions): Actor {
  if (def.auth === 'none') return ANONYMOUS;
  const secret = secretOf(request);
  if (!secret) throw new AgentboxError('unauthorized', 'missing X-API-Key header');
  const actor = options.authenticate(secret);
  if (!actor) throw new AgentboxError('unauthorized', 'unknown or revoked API key');
  if (def.auth === 'admin' && actor.scope !== 'admin')
    throw new AgentboxError('forbidden', `${def.operationId} needs an admin key`);
  return actor;
}

/** Why a request still running when its key was revoked was ended. */
export function keyRevokedError(keyId: string): AgentboxError {
  return new AgentboxError('unauthorized', `API key ${keyId} was revoked; this request was ended`, {
    details: { reason: 'key_revoked' },
  });
}

function drain(body: unknown): void {
  if (body instanceof Readable) body.resume();
}

/** A JSON response must match the route's schema (or a JSON alternative); tests turn this on. */
function validateResponse(def: RouteDef, spec: ResponseSpec, value: unknown): void {
  const schemas = [spec.schema, ...(spec.alternatives ?? []).map((a) => a.schema)].filter(
    (s): s is z.ZodType => s !== undefined,
  );
  if (schemas.length === 0 || schemas.some((s) => s.safeParse(value).success)) return;
  throw new AgentboxError('internal', `${def.operationId} answered with a body that breaks its own schema`, {
    cause: schemas[0]!.safeParse(value).error,
  });
}

/** The caller of each request, authorized in its onRequest hook. */
const actors = new WeakMap<FastifyRequest, Actor>();

export function registerRoutes(
  app: FastifyInstance,
  routes: readonly RouteDef[],
  options: RegisterOptions,
): void {
  for (const def of routes) {
    const [status, spec] = Object.entries(def.responses)[0]!;
    app.route({
      method: def.method,
      url: def.url,
      ...(def.bodyLimit ? { bodyLimit: def.bodyLimit } : {}),
      config: { operationId: def.operationId },
      // Before the body is read: a caller without a valid key must not make the daemon parse up
      // to a route's body limit (64 MiB for a task) first.
      onRequest: (request, _reply, done) => {
        try {
          if (options.closing() && def.auth !== 'none')
            throw new AgentboxError('shutting_down', 'the daemon is shutting down');
          actors.set(request, authorize(def, request, options));
          done();
        } catch (err) {
          done(err as Error);
        }
      },
      handler: async (request, reply) => {
        const actor = actors.get(request)!;
        const abort = new AbortController();
        // Checked once before the body; a request that lasts (a slow body, a stream, a long exec)
        // is ended if its key is revoked meanwhile, like a client that went away, but with the reason.
        const unwatch =
          def.auth === 'none'
            ? undefined
            : options.watchKey(actor.keyId, () => {
                request.log.info({ keyId: actor.keyId }, 'key revoked: request ended');
                abort.abort(keyRevokedError(actor.keyId));
              });
        reply.raw.once('close', () => {
          unwatch?.();
          if (!reply.raw.writableFinished) abort.abort();
        });
        // And once more now the body is in, with the watch already on: a client may take as long as
        // it likes to send a body, and nothing its key no longer allows may act.
        const secret = secretOf(request);
        if (def.auth !== 'none' && (secret === undefined || !options.authenticate(secret)))
          throw keyRevokedError(actor.keyId);
        const params = parsePart(def.params, request.params, 'path');
        const query = parsePart(def.query, request.query, 'query');
        let body: unknown;
        if (def.rawBody) {
          if (!(request.body instanceof Readable))
            throw new AgentboxError('unsupported_media_type', `send the bytes as ${def.rawBody.contentType}`);
          body = request.body;
        } else if (request.body instanceof Readable) {
          drain(request.body);
          if (def.body)
            throw new AgentboxError('unsupported_media_type', 'send the body as application/json');
        } else {
          body = parsePart(def.body, request.body, 'body');
        }
        let result: unknown;
        try {
          result = await def.handler({
            query,
            params,
            body,
            actor,
            request,
            reply,
            signal: abort.signal,
          });
        } catch (err) {
          throw endedByDaemon(abort.signal) ?? err;
        }
        // A handler that returned the reply (a stream) resolves with undefined once that is over, its
        // client gone or not: what was answered stays answered.
        if (result === reply || reply.sent || reply.raw.headersSent) return reply;
        // Revoked before the answer: whatever the handler made of its aborted signal, it is a 401.
        const ended = endedByDaemon(abort.signal);
        if (ended) throw ended;
        if (options.validateResponses) validateResponse(def, spec, result);
        return reply.code(Number(status)).send(result);
      },
    });
  }
}
