import {
  CreateTaskRequestSchema,
  LibraryItemParamsSchema,
  LibraryItemSchema,
  LibraryItemSummarySchema,
  LibraryListQuerySchema,
  LibraryListResponseSchema,
  PutLibraryItemRequestSchema,
  TaskDeleteResponseSchema,
  TaskEventSchema,
  TaskEventsQuerySchema,
  TaskListQuerySchema,
  TaskListResponseSchema,
  TaskParamsSchema,
  TaskSchema,
  TaskSpecSchema,
  type ErrorCode,
  type Task,
  type TaskEvent,
} from '@agentbox/protocol';
import { z } from 'zod';
import type { LibraryService } from '../../services/library-service.js';
import type { TaskService } from '../../services/task-service.js';
import type { TaskRecord } from '../../store/task-store.js';
import { defineRoute, type RouteDef } from '../route.js';
import { streamErrorFrame, streamResponse } from '../stream.js';

export interface TaskRouteDeps {
  tasks: TaskService;
  library: LibraryService;
  eventCount: (taskId: string) => number;
}

const TASKS = ['tasks'];
const LIBRARY = ['library'];
const ON_TASK: ErrorCode[] = ['invalid_request', 'unauthorized', 'task_not_found'];

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The API view of a stored task. */
export function toApiTask(task: TaskRecord, deps: Pick<TaskRouteDeps, 'tasks' | 'eventCount'>): Task {
  return {
    id: task.id,
    boxId: task.boxId,
    userId: task.userId,
    state: task.state,
    agent: task.agent,
    queuePosition: task.state === 'queued' ? deps.tasks.position(task.id) : null,
    spec: task.spec,
    createdAt: new Date(task.createdAt).toISOString(),
    startedAt: iso(task.startedAt),
    finishedAt: iso(task.finishedAt),
    result: task.result,
    error: task.error,
    library: task.library,
    eventCount: deps.eventCount(task.id),
  };
}

/** An event as one Server-Sent Event (id = seq, so Last-Event-ID resumes). */
export function sseFrame(event: TaskEvent): string {
  return `id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/** `/v1/tasks` and `/v1/library`. */
export function taskRoutes(deps: TaskRouteDeps): RouteDef[] {
  const view = (task: TaskRecord) => toApiTask(task, deps);
  return [
    defineRoute({
      method: 'POST',
      url: '/v1/tasks',
      operationId: 'createTask',
      summary: 'Queue a task: in a box, in the user’s persistent box, or in a fresh box',
      tags: TASKS,
      auth: 'key',
      body: CreateTaskRequestSchema,
      bodyLimit: 64 * 1024 * 1024,
      responses: { 201: { description: 'The queued task', schema: TaskSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found', 'capacity_exhausted', 'payload_too_large'],
      handler: ({ body, actor }) => {
        const { boxId, userId, ...fields } = body;
        const spec = TaskSpecSchema.parse(fields);
        return Promise.resolve(view(deps.tasks.submit({ actor, spec, boxId, userId })));
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/tasks',
      operationId: 'listTasks',
      summary: 'Tasks this key may see, newest first, a page at a time (`cursor` ← `nextCursor`)',
      tags: TASKS,
      auth: 'key',
      query: TaskListQuerySchema,
      responses: { 200: { description: 'A page of tasks', schema: TaskListResponseSchema } },
      errors: ['invalid_request', 'unauthorized'],
      handler: ({ query, actor }) => {
        const page = deps.tasks.list({
          actor,
          limit: query.limit,
          ...(query.boxId ? { boxId: query.boxId } : {}),
          ...(query.cursor ? { cursor: query.cursor } : {}),
        });
        return Promise.resolve({ tasks: page.tasks.map(view), nextCursor: page.nextCursor });
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/tasks/:id',
      operationId: 'getTask',
      summary: 'One task: state, queue position, result',
      tags: TASKS,
      auth: 'key',
      params: TaskParamsSchema,
      responses: { 200: { description: 'The task', schema: TaskSchema } },
      errors: ON_TASK,
      handler: ({ params, actor }) => Promise.resolve(view(deps.tasks.get({ actor, id: params.id }))),
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/tasks/:id/events',
      operationId: 'streamTaskEvents',
      summary: 'The task’s events after `after`, live until it ends: NDJSON, or SSE (Accept or format)',
      tags: TASKS,
      auth: 'key',
      params: TaskParamsSchema,
      query: TaskEventsQuerySchema,
      responses: {
        200: {
          description: 'One TaskEvent per line (NDJSON) or per SSE message (id = seq)',
          contentType: 'application/x-ndjson',
          schema: TaskEventSchema,
          alternatives: [{ contentType: 'text/event-stream' }],
        },
      },
      errors: ON_TASK,
      handler: ({ params, query, actor, request, reply, signal }) => {
        const sse =
          query.format === 'sse' ||
          (query.format === undefined && (request.headers.accept ?? '').includes('text/event-stream'));
        const lastEventId = Number(request.headers['last-event-id']);
        const after = Number.isInteger(lastEventId) && lastEventId > query.after ? lastEventId : query.after;
        deps.tasks.get({ actor, id: params.id });
        return streamResponse(
          reply,
          signal,
          {
            contentType: sse ? 'text/event-stream' : 'application/x-ndjson',
            headers: { 'cache-control': 'no-cache', 'x-accel-buffering': 'no' },
            // The next event may be a long way off (a queued or quiet task).
            headersFirst: true,
            lateError: (err) => streamErrorFrame(err, request.id, sse),
          },
          async (write) => {
            if (sse) await write(': agentbox task events\n\n');
            const format = (event: TaskEvent) => (sse ? sseFrame(event) : `${JSON.stringify(event)}\n`);
            if (!query.follow) {
              for (const event of deps.tasks.events({ actor, id: params.id, after }))
                await write(format(event));
              return;
            }
            await deps.tasks.follow({ actor, id: params.id, after, signal }, (event) => write(format(event)));
          },
        );
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/v1/tasks/:id/cancel',
      operationId: 'cancelTask',
      summary: 'Cancel a queued or running task (its agent and children are killed)',
      tags: TASKS,
      auth: 'key',
      params: TaskParamsSchema,
      responses: { 200: { description: 'The task', schema: TaskSchema } },
      errors: [...ON_TASK, 'invalid_state'],
      handler: async ({ params, actor }) => view(await deps.tasks.cancel({ actor, id: params.id })),
    }),
    defineRoute({
      method: 'DELETE',
      url: '/v1/tasks/:id',
      operationId: 'deleteTask',
      summary: 'Delete an ended task and its events (a queued or running one: cancel it first)',
      tags: TASKS,
      auth: 'key',
      params: TaskParamsSchema,
      responses: { 200: { description: 'Deleted', schema: TaskDeleteResponseSchema } },
      errors: [...ON_TASK, 'invalid_state'],
      handler: ({ params, actor }) => Promise.resolve(deps.tasks.remove({ actor, id: params.id })),
    }),

    // ---- library ----
    defineRoute({
      method: 'GET',
      url: '/v1/library',
      operationId: 'listLibrary',
      summary: 'Library items (skills, agents, MCP servers, hooks, rules, settings)',
      tags: LIBRARY,
      auth: 'key',
      query: LibraryListQuerySchema,
      responses: { 200: { description: 'Items', schema: LibraryListResponseSchema } },
      errors: ['invalid_request', 'unauthorized'],
      handler: ({ query }) => Promise.resolve({ items: deps.library.list(query) }),
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/library/:kind/:namespace/:name',
      operationId: 'getLibraryItem',
      summary: 'One library item with its files',
      tags: LIBRARY,
      auth: 'key',
      params: LibraryItemParamsSchema,
      responses: { 200: { description: 'The item', schema: LibraryItemSchema } },
      errors: ['invalid_request', 'unauthorized', 'library_item_not_found'],
      handler: ({ params }) => Promise.resolve(deps.library.get(params)),
    }),
    defineRoute({
      method: 'PUT',
      url: '/v1/library/:kind/:namespace/:name',
      operationId: 'putLibraryItem',
      summary: 'Create or replace a library item (admin)',
      tags: LIBRARY,
      auth: 'admin',
      params: LibraryItemParamsSchema,
      body: PutLibraryItemRequestSchema,
      bodyLimit: 4 * 1024 * 1024,
      responses: { 200: { description: 'Stored', schema: LibraryItemSummarySchema } },
      errors: ['invalid_request', 'unauthorized', 'forbidden', 'payload_too_large'],
      handler: ({ params, body }) => deps.library.put(params, body.files),
    }),
    defineRoute({
      method: 'DELETE',
      url: '/v1/library/:kind/:namespace/:name',
      operationId: 'deleteLibraryItem',
      summary: 'Remove a library item (admin)',
      tags: LIBRARY,
      auth: 'admin',
      params: LibraryItemParamsSchema,
      responses: { 200: { description: 'Removed', schema: z.object({ deleted: z.literal(true) }).strict() } },
      errors: ['invalid_request', 'unauthorized', 'forbidden', 'library_item_not_found'],
      handler: async ({ params }) => {
        await deps.library.remove(params);
        return { deleted: true as const };
      },
    }),
  ];
}
