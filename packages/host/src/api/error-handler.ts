import type { FastifyError, FastifyInstance } from 'fastify';
import {
  AgentboxError,
  httpStatusOf,
  isAgentboxError,
  type ErrorBody,
  type ErrorCode,
} from '@agentbox/protocol';

/** fastify's own errors (body parsing, limits, routing) by HTTP status → our code. */
const FRAMEWORK_CODES: Record<number, ErrorCode> = {
  400: 'invalid_request',
  404: 'route_not_found',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
};

/** Any thrown value → an AgentboxError whose message is safe to show a client. */
export function toAgentboxError(err: unknown): AgentboxError {
  if (isAgentboxError(err)) return err;
  const e = err as Partial<FastifyError>;
  if (typeof e.code === 'string' && e.code.startsWith('FST_') && typeof e.statusCode === 'number') {
    const code = FRAMEWORK_CODES[e.statusCode];
    if (code) {
      const message =
        e.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? 'request body is larger than this endpoint accepts'
          : (e.message ?? 'invalid request');
      return new AgentboxError(code, message, { cause: err });
    }
  }
  return new AgentboxError(
    'internal',
    'internal error; the daemon log has the details under this requestId',
    {
      cause: err,
    },
  );
}

export function errorBody(err: AgentboxError, requestId: string): ErrorBody {
  return {
    error: {
      code: err.code,
      message: err.message,
      ...(err.details ? { details: err.details } : {}),
      requestId,
    },
  };
}

/** The one place errors become HTTP responses: status from the registry, never a stack trace. */
export function registerErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const error = toAgentboxError(err);
    const status = httpStatusOf(error.code);
    if (status >= 500) request.log.error({ err, code: error.code }, 'request failed');
    else request.log.info({ code: error.code, message: error.message }, 'request refused');
    if (reply.sent || reply.raw.headersSent) {
      reply.raw.destroy();
      return;
    }
    return reply.code(status).type('application/json').send(errorBody(error, request.id));
  });
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .send(
        errorBody(
          new AgentboxError('route_not_found', `no endpoint ${request.method} ${request.url.split('?')[0]}`),
          request.id,
        ),
      ),
  );
}
