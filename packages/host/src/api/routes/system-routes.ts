import { z } from 'zod';
import { defineRoute, type RouteDef } from '../route.js';

export interface SystemRouteDeps {
  metrics: { render(): Promise<string>; contentType: string };
  openapi: () => Record<string, unknown>;
}

const SYSTEM = ['system'];

/** Metrics and the API description. */
export function systemRoutes(deps: SystemRouteDeps): RouteDef[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/metrics',
      operationId: 'getMetrics',
      // Host-wide counts over every key's boxes, so not for a user key.
      summary: 'Prometheus metrics (admin): boxes by state, boot durations, exec counts, API latency',
      tags: SYSTEM,
      auth: 'admin',
      responses: { 200: { description: 'Prometheus text format', contentType: 'text/plain' } },
      errors: ['unauthorized', 'forbidden'],
      handler: async ({ reply }) => reply.type(deps.metrics.contentType).send(await deps.metrics.render()),
    }),
    defineRoute({
      method: 'GET',
      url: '/openapi.json',
      operationId: 'getOpenApi',
      summary: 'This API as OpenAPI 3.1, generated from its zod schemas',
      tags: SYSTEM,
      auth: 'key',
      responses: {
        200: { description: 'OpenAPI document', schema: z.record(z.string(), z.unknown()) },
      },
      errors: ['unauthorized'],
      handler: () => Promise.resolve(deps.openapi()),
    }),
  ];
}
