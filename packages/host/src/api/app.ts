import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Actor } from '../store/key-store.js';
import { registerErrorHandler } from './error-handler.js';
import { registerRoutes, type RouteDef } from './route.js';

export const DEFAULT_BODY_LIMIT_BYTES = 1024 * 1024;

export interface AppOptions {
  routes: readonly RouteDef[];
  authenticate: (secret: string) => Actor | undefined;
  /** See RegisterOptions.watchKey. */
  watchKey: (keyId: string, onRevoked: () => void) => () => void;
  logger: FastifyBaseLogger | false;
  bodyLimitBytes?: number;
  validateResponses?: boolean;
  closing: () => boolean;
  observeHttp?: (labels: { method: string; route: string; status: number }, seconds: number) => void;
}

/** The fastify instance: request ids, body parsing and limits, one error handler, the route table. */
export function createApp(options: AppOptions): FastifyInstance {
  const app = Fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
    bodyLimit: options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES,
    genReqId: () => `req_${randomBytes(8).toString('hex')}`,
    requestIdHeader: false,
  });
  // Anything that is not JSON is handed to the route unparsed, as a stream (file uploads).
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
  app.addHook('onSend', (request, reply, payload, done) => {
    void reply.header('x-request-id', request.id);
    done(null, payload);
  });
  if (options.observeHttp) {
    const observe = options.observeHttp;
    app.addHook('onResponse', (request, reply, done) => {
      observe(
        { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: reply.statusCode },
        reply.elapsedTime / 1000,
      );
      done();
    });
  }
  registerErrorHandler(app);
  registerRoutes(app, options.routes, {
    authenticate: options.authenticate,
    watchKey: options.watchKey,
    validateResponses: options.validateResponses ?? false,
    closing: options.closing,
  });
  return app;
}
