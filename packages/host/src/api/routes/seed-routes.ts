import path from 'node:path';
import {
  CreateMicrovmRequestSchema,
  CreateMicrovmResponseSchema,
  DownloadFileQuerySchema,
  ClaudeInTheBoxRequestSchema,
  SeedTaskLineSchema,
  TaskSpecSchema,
  HealthResponseSchema,
  KillMicrovmRequestSchema,
  KillMicrovmResponseSchema,
  ListProcessesResponseSchema,
  ListWorkspaceFilesResponseSchema,
  MaintenanceResponseSchema,
  StatusResponseSchema,
  type TaskEvent,
  UserQuerySchema,
} from '@agentbox/protocol';
import type { BoxService } from '../../services/box-service.js';
import { hostStatus } from '../../services/box-view.js';
import type { FileService } from '../../services/file-service.js';
import type { TaskService } from '../../services/task-service.js';
import { toAgentboxError } from '../error-handler.js';
import { defineRoute, type RouteDef } from '../route.js';
import { streamResponse } from '../stream.js';

export interface SeedRouteDeps {
  boxes: BoxService;
  files: FileService;
  tasks: TaskService;
  version: string;
  startedAt: number;
  clock: () => number;
}

const SEED = ['seed'];
const GUEST_ERRORS = ['guest_unreachable', 'guest_agent_restarted', 'vm_exited'] as const;

/** The seed-compatible surface (Claude-in-the-box): snake_case, shapes kept verbatim. */
export function seedRoutes(deps: SeedRouteDeps): RouteDef[] {
  return [
    defineRoute({
      method: 'POST',
      url: '/create_microvm',
      operationId: 'createMicrovm',
      summary: "Create the user's persistent box, or return the live one",
      tags: SEED,
      auth: 'key',
      body: CreateMicrovmRequestSchema,
      responses: { 200: { description: 'Created, or already there', schema: CreateMicrovmResponseSchema } },
      errors: ['invalid_request', 'unauthorized', 'forbidden', 'capacity_exhausted', 'boot_failed'],
      handler: async ({ body, actor }) => {
        const { status, box } = await deps.boxes.createForUser({
          actor,
          userId: body.user_id,
          runtime: body.runtime,
          env: body.env_vars,
        });
        return { status, vm_ip: null, pid: box.pid };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/list_workspace_files',
      operationId: 'listWorkspaceFiles',
      summary: 'Files under /workspace of the user’s box',
      tags: SEED,
      auth: 'key',
      query: UserQuerySchema,
      responses: { 200: { description: 'Relative paths', schema: ListWorkspaceFilesResponseSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found', 'invalid_state', ...GUEST_ERRORS],
      handler: async ({ query, actor, signal }) => {
        const { files, omitted } = await deps.files.listWorkspace({ actor, userId: query.user_id, signal });
        return { files, ...(omitted > 0 ? { omitted } : {}) };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/download_file',
      operationId: 'downloadFile',
      summary: 'Bytes of one file of /workspace',
      tags: SEED,
      auth: 'key',
      query: DownloadFileQuerySchema,
      responses: { 200: { description: 'The file', contentType: 'application/octet-stream' } },
      errors: [
        'invalid_request',
        'path_outside_workspace',
        'unauthorized',
        'box_not_found',
        'file_not_found',
        ...GUEST_ERRORS,
      ],
      handler: ({ query, actor, reply, signal }) =>
        streamResponse(
          reply,
          signal,
          {
            contentType: 'application/octet-stream',
            headers: {
              'content-disposition': `attachment; filename="${path.posix.basename(query.filename).replace(/[^\w.-]/g, '_')}"`,
            },
          },
          (write) =>
            deps.files.downloadWorkspaceFile({
              actor,
              userId: query.user_id,
              filename: query.filename,
              sink: write,
              signal,
            }),
        ),
    }),
    defineRoute({
      method: 'GET',
      url: '/list_processes',
      operationId: 'listProcesses',
      summary: 'Processes running in the user’s box',
      tags: SEED,
      auth: 'key',
      query: UserQuerySchema,
      responses: { 200: { description: 'Processes', schema: ListProcessesResponseSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found', 'invalid_state', ...GUEST_ERRORS],
      handler: async ({ query, actor, signal }) => ({
        processes: await deps.files.userProcesses({ actor, userId: query.user_id, signal }),
      }),
    }),
    defineRoute({
      method: 'GET',
      url: '/status',
      operationId: 'getStatus',
      summary: 'Boxes, resources and host (admin)',
      tags: SEED,
      auth: 'admin',
      responses: { 200: { description: 'Host status', schema: StatusResponseSchema } },
      errors: ['unauthorized', 'forbidden'],
      handler: () => Promise.resolve(hostStatus(deps.boxes, deps.clock)),
    }),
    defineRoute({
      method: 'POST',
      url: '/kill_microvm',
      operationId: 'killMicrovm',
      summary: "Delete the user's box",
      tags: SEED,
      auth: 'key',
      body: KillMicrovmRequestSchema,
      responses: { 200: { description: 'Killed', schema: KillMicrovmResponseSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found', 'invalid_state'],
      handler: async ({ body, actor }) => {
        const box = deps.boxes.getByUser({ actor, userId: body.user_id });
        await deps.boxes.remove({ actor, id: box.id });
        return { status: 'killed' as const, user_id: body.user_id };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/health',
      operationId: 'getHealth',
      summary: 'Liveness; needs no key',
      tags: SEED,
      auth: 'none',
      responses: { 200: { description: 'Serving', schema: HealthResponseSchema } },
      errors: [],
      handler: () =>
        Promise.resolve({
          status: 'ok' as const,
          version: deps.version,
          uptimeSeconds: (deps.clock() - deps.startedAt) / 1000,
        }),
    }),
    defineRoute({
      method: 'POST',
      url: '/maintenance',
      operationId: 'runMaintenance',
      summary: 'Run the reaper now (admin): TTL-expired and dead boxes are cleaned up',
      tags: SEED,
      auth: 'admin',
      responses: { 200: { description: 'What was reaped', schema: MaintenanceResponseSchema } },
      errors: ['unauthorized', 'forbidden'],
      handler: () => deps.boxes.reap(),
    }),
    defineRoute({
      method: 'POST',
      url: '/claude_in_the_box',
      operationId: 'claudeInTheBox',
      summary:
        "Run Claude Code on the user's persistent box; streams text, tool_use and completion lines (NDJSON)",
      tags: SEED,
      auth: 'key',
      body: ClaudeInTheBoxRequestSchema,
      bodyLimit: 64 * 1024 * 1024,
      responses: {
        200: {
          description:
            'One `{"type","content"}` per line: text, tool_use, completion (or error). X-Agentbox-Task-Id names ' +
            'the task, whose full event log is at /v1/tasks/{id}/events.',
          contentType: 'application/x-ndjson',
          schema: SeedTaskLineSchema,
        },
      },
      errors: ['invalid_request', 'unauthorized', 'forbidden', 'capacity_exhausted', 'payload_too_large'],
      handler: ({ body, actor, reply, signal }) => {
        const spec = TaskSpecSchema.parse({
          prompt: body.task,
          agent: 'claude',
          ...(body.files ? { files: body.files } : {}),
          ...(body.context ? { context: body.context } : {}),
          ...(body.model ? { model: body.model } : {}),
          ...(body.effort ? { effort: body.effort } : {}),
          ...(body.timeout_seconds ? { timeoutSeconds: body.timeout_seconds } : {}),
        });
        const task = deps.tasks.submit({ actor, spec, userId: body.user_id, continueLastSession: true });
        return streamResponse(
          reply,
          signal,
          // At once: the task may wait in the queue, and the caller wants its id meanwhile.
          {
            contentType: 'application/x-ndjson',
            headers: { 'x-agentbox-task-id': task.id },
            headersFirst: true,
            // In the seed stream's own error shape (a revoked key, a failure).
            lateError: (err) =>
              `${JSON.stringify({ type: 'error', content: toAgentboxError(err).message })}\n`,
          },
          async (write) => {
            await deps.tasks.follow({ actor, id: task.id, signal }, (event) => {
              const line = seedLine(event);
              return line === undefined ? undefined : write(`${JSON.stringify(line)}\n`);
            });
          },
        );
      },
    }),
  ];
}

/** The seed stream's shape of an event; status and tool_result events are not part of it. */
export function seedLine(event: TaskEvent): { type: string; content: unknown } | undefined {
  switch (event.type) {
    case 'text':
    case 'tool_use':
    case 'completion':
      return { type: event.type, content: event.content };
    case 'error': {
      const content = event.content as { message?: unknown } | null;
      return { type: 'error', content: typeof content?.message === 'string' ? content.message : content };
    }
    case 'status':
    case 'tool_result':
      return undefined;
  }
}
