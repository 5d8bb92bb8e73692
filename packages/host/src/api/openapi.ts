import { z } from 'zod';
import { ERROR_CODES, ErrorBodySchema, httpStatusOf, type ErrorCode } from '@agentbox/protocol';
import type { RouteDef } from './route.js';

type JsonSchema = Record<string, unknown>;

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const out = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as JsonSchema;
  delete out.$schema;
  return out;
}

function parameters(schema: z.ZodType | undefined, where: 'path' | 'query'): JsonSchema[] {
  if (!schema) return [];
  const object = jsonSchema(schema, 'input') as {
    properties?: Record<string, JsonSchema>;
    required?: string[];
  };
  return Object.entries(object.properties ?? {}).map(([name, prop]) => {
    const { description, ...propSchema } = prop;
    return {
      name,
      in: where,
      required: where === 'path' || (object.required ?? []).includes(name),
      ...(typeof description === 'string' ? { description } : {}),
      schema: propSchema,
    };
  });
}

function errorResponses(codes: readonly ErrorCode[]): Record<string, JsonSchema> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes)
    byStatus.set(httpStatusOf(code), [...(byStatus.get(httpStatusOf(code)) ?? []), code]);
  const out: Record<string, JsonSchema> = {};
  for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    out[String(status)] = {
      description: list.map((c) => `\`${c}\`: ${ERROR_CODES[c].description}`).join(' '),
      content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
    };
  }
  return out;
}

function content(contentType: string, schema: z.ZodType | undefined): Record<string, JsonSchema> {
  return {
    [contentType]: schema
      ? { schema: jsonSchema(schema, 'output') }
      : { schema: { type: 'string', contentMediaType: contentType } },
  };
}

/** The OpenAPI 3.1 document of the routes, generated from their zod schemas. Deterministic. */
export function buildOpenApi(routes: readonly RouteDef[], info: { version: string }): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of routes) {
    const url = route.url.replace(/:([A-Za-z_]+)/g, '{$1}');
    const responses: Record<string, JsonSchema> = {};
    for (const [status, spec] of Object.entries(route.responses)) {
      responses[status] = {
        description: spec.description,
        content: Object.assign(
          content(spec.contentType ?? 'application/json', spec.schema),
          ...(spec.alternatives ?? []).map((a) => content(a.contentType, a.schema)),
        ),
      };
    }
    const errors =
      route.auth === 'none' ? route.errors : [...new Set<ErrorCode>(['unauthorized', ...route.errors])];
    Object.assign(responses, errorResponses(errors.filter((c) => !(String(httpStatusOf(c)) in responses))));
    const operation: JsonSchema = {
      operationId: route.operationId,
      summary: route.summary,
      tags: route.tags,
      security: route.auth === 'none' ? [] : [{ ApiKey: [] }],
      parameters: [...parameters(route.params, 'path'), ...parameters(route.query, 'query')],
      ...(route.body
        ? {
            requestBody: {
              required: true,
              content: { 'application/json': { schema: jsonSchema(route.body, 'input') } },
            },
          }
        : {}),
      ...(route.rawBody
        ? {
            requestBody: {
              required: true,
              description: route.rawBody.description,
              content: {
                [route.rawBody.contentType]: {
                  schema: { type: 'string', contentMediaType: route.rawBody.contentType },
                },
              },
            },
          }
        : {}),
      responses,
    };
    (paths[url] ??= {})[route.method.toLowerCase()] = operation;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'agentbox',
      version: info.version,
      description:
        'Self-hosted microVM sandboxes for AI coding agents. Every endpoint but GET /health needs an X-API-Key header. Errors are {"error": {code, message, details?, requestId}}.',
    },
    components: {
      securitySchemes: { ApiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' } },
      schemas: { Error: jsonSchema(ErrorBodySchema, 'output') },
    },
    paths,
  };
}
