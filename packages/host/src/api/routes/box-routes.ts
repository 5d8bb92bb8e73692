import type { Readable } from 'node:stream';
import {
  AgentboxError,
  ApiExecRequestSchema,
  BoxListResponseSchema,
  BoxParamsSchema,
  BoxSchema,
  CommandDeleteResponseSchema,
  CommandListResponseSchema,
  CommandOutputEventSchema,
  CommandOutputQuerySchema,
  CommandParamsSchema,
  CommandSchema,
  CreateBoxRequestSchema,
  StartCommandRequestSchema,
  CommandStdinRequestSchema,
  CommandStdinResultSchema,
  EgressAuditQuerySchema,
  EgressAuditResponseSchema,
  ExecEventSchema,
  ExecQuerySchema,
  ExecResultSchema,
  FileDeleteResponseSchema,
  FileListResponseSchema,
  FileQuerySchema,
  FileWriteResponseSchema,
  KillProcessQuerySchema,
  KillProcessResponseSchema,
  ProcessListResponseSchema,
  ProcessParamsSchema,
  type ErrorCode,
} from '@agentbox/protocol';
import type { BoxService } from '../../services/box-service.js';
import type { CommandService } from '../../services/command-service.js';
import type { AuditStore } from '../../store/audit-store.js';
import type { BoxRecord } from '../../store/box-store.js';
import { toApiBox } from '../../services/box-view.js';
import type { ExecService } from '../../services/exec-service.js';
import type { FileService } from '../../services/file-service.js';
import { defineRoute, type RouteDef } from '../route.js';
import { streamErrorFrame, streamResponse } from '../stream.js';

export interface BoxRouteDeps {
  boxes: BoxService;
  audit: Pick<AuditStore, 'list'>;
  exec: ExecService;
  commands: CommandService;
  files: FileService;
}

const V1 = ['boxes'];
const ON_BOX: ErrorCode[] = [
  'invalid_request',
  'unauthorized',
  'box_not_found',
  'invalid_state',
  'guest_unreachable',
  'guest_agent_restarted',
  'vm_exited',
];
/** Largest exec request (stdin rides in it as base64). */
const EXEC_BODY_LIMIT_BYTES = 12 * 1024 * 1024;

/** `/v1` REST over the same services as the seed surface. */
export function boxRoutes(deps: BoxRouteDeps): RouteDef[] {
  const view = (box: BoxRecord) => toApiBox(box, { heldFor: deps.boxes.heldFor(box.id) });
  return [
    defineRoute({
      method: 'POST',
      url: '/v1/boxes',
      operationId: 'createBox',
      summary: 'Create and boot a box',
      tags: V1,
      auth: 'key',
      body: CreateBoxRequestSchema,
      responses: { 201: { description: 'Running box', schema: BoxSchema } },
      errors: [
        'invalid_request',
        'unauthorized',
        'forbidden',
        'invalid_state',
        'capacity_exhausted',
        'boot_failed',
      ],
      handler: async ({ body, actor, signal }) => {
        const box = await deps.boxes.create({
          actor,
          userId: body.userId,
          runtime: body.runtime,
          resources: {
            ...(body.memoryMib ? { memoryMib: body.memoryMib } : {}),
            ...(body.vcpus ? { vcpus: body.vcpus } : {}),
            ...(body.diskGib ? { diskGib: body.diskGib } : {}),
          },
          ttlSeconds: body.ttlSeconds,
          labels: body.labels,
          env: body.env,
          ...(body.egress ? { egressPolicy: body.egress } : {}),
        });
        // The caller went away while the box booted (a client timeout): it never learns the id, so
        // the box would run unowned until its TTL, if any. A new box holds nothing yet.
        if (signal.aborted) {
          await deps.boxes.remove({ actor, id: box.id });
          throw new AgentboxError('invalid_request', 'the client went away while the box was created');
        }
        return view(box);
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/boxes/:id/egress',
      operationId: 'listBoxEgress',
      summary: "The box's egress decisions (audit), oldest first",
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      query: EgressAuditQuerySchema,
      responses: { 200: { description: 'Audit records', schema: EgressAuditResponseSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found'],
      handler: ({ params, query, actor }) => {
        const box = deps.boxes.get({ actor, id: params.id });
        const rows = deps.audit.list(box.id, { after: query.after, limit: query.limit });
        return Promise.resolve({
          records: rows.map((row) => ({ ...row.record, seq: row.seq })),
          next: rows.length === query.limit ? rows.at(-1)!.seq : null,
        });
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/boxes',
      operationId: 'listBoxes',
      summary: 'Boxes this key may see (all for admin), newest first; deleted ones left out',
      tags: V1,
      auth: 'key',
      responses: { 200: { description: 'Boxes', schema: BoxListResponseSchema } },
      errors: ['unauthorized'],
      handler: ({ actor }) => Promise.resolve({ boxes: deps.boxes.list({ actor }).map(view) }),
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/boxes/:id',
      operationId: 'getBox',
      summary: 'One box',
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      responses: { 200: { description: 'The box', schema: BoxSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found'],
      handler: ({ params, actor }) => Promise.resolve(view(deps.boxes.get({ actor, id: params.id }))),
    }),
    defineRoute({
      method: 'DELETE',
      url: '/v1/boxes/:id',
      operationId: 'deleteBox',
      summary: 'Kill the VM and remove everything of the box',
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      responses: { 200: { description: 'The deleted box', schema: BoxSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found', 'invalid_state'],
      handler: async ({ params, actor }) => view(await deps.boxes.remove({ actor, id: params.id })),
    }),
    ...(
      [
        ['pause', 'pauseBox', 'Pause the box: its vCPUs stop (no host CPU); the next request resumes it'],
        ['resume', 'resumeBox', 'Resume a paused box, or wake a hibernated one'],
        [
          'hibernate',
          'hibernateBox',
          'Hibernate the box: its whole state is saved next to its disk and its VM process ends (no host memory); the next request wakes it',
        ],
      ] as const
    ).map(([action, operationId, summary]) =>
      defineRoute({
        method: 'POST',
        url: `/v1/boxes/:id/${action}`,
        operationId,
        summary,
        tags: V1,
        auth: 'key',
        params: BoxParamsSchema,
        responses: { 200: { description: 'The box', schema: BoxSchema } },
        errors: [...ON_BOX, 'snapshot_failed', 'boot_failed'],
        handler: async ({ params, actor }) => view(await deps.boxes[action]({ actor, id: params.id })),
      }),
    ),
    defineRoute({
      method: 'POST',
      url: '/v1/boxes/:id/exec',
      operationId: 'execInBox',
      summary: 'Run a command: NDJSON events (default) or one JSON result with ?stream=false',
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      query: ExecQuerySchema,
      body: ApiExecRequestSchema,
      bodyLimit: EXEC_BODY_LIMIT_BYTES,
      responses: {
        200: {
          description: 'One ExecEvent per line, ending with exit (or error); with stream=false an ExecResult',
          contentType: 'application/x-ndjson',
          schema: ExecEventSchema,
          alternatives: [{ contentType: 'application/json', schema: ExecResultSchema }],
        },
      },
      errors: [...ON_BOX, 'payload_too_large', 'file_not_found'],
      handler: async ({ params, query, body, actor, reply, signal }) => {
        const options = { actor, id: params.id, request: body, signal };
        if (query.stream === 'false') return deps.exec.collect(options);
        return streamResponse(
          reply,
          signal,
          {
            contentType: 'application/x-ndjson',
            lateError: (err) => streamErrorFrame(err, reply.request.id),
          },
          async (write) => {
            const exit = await deps.exec.stream(options, (event) => write(`${JSON.stringify(event)}\n`));
            await write(`${JSON.stringify(exit)}\n`);
          },
        );
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/v1/boxes/:id/commands',
      operationId: 'startBoxCommand',
      summary: 'Start a background command: it runs on past this request, its output kept in the box',
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      body: StartCommandRequestSchema,
      bodyLimit: EXEC_BODY_LIMIT_BYTES,
      responses: { 201: { description: 'The command, running (or exited at once)', schema: CommandSchema } },
      errors: [...ON_BOX, 'payload_too_large', 'file_not_found', 'capacity_exhausted', 'not_implemented'],
      handler: ({ params, body, actor }) => deps.commands.start({ actor, id: params.id, request: body }),
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/boxes/:id/commands',
      operationId: 'listBoxCommands',
      summary: "The box's background commands, oldest first",
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      responses: { 200: { description: 'Commands', schema: CommandListResponseSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found'],
      handler: ({ params, actor }) =>
        Promise.resolve({ commands: deps.commands.list({ actor, id: params.id }) }),
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/boxes/:id/commands/:commandId',
      operationId: 'getBoxCommand',
      summary: 'One background command',
      tags: V1,
      auth: 'key',
      params: CommandParamsSchema,
      responses: { 200: { description: 'The command', schema: CommandSchema } },
      errors: ['invalid_request', 'unauthorized', 'box_not_found', 'command_not_found'],
      handler: ({ params, actor }) =>
        Promise.resolve(deps.commands.get({ actor, id: params.id, commandId: params.commandId })),
    }),
    defineRoute({
      method: 'POST',
      url: '/v1/boxes/:id/commands/:commandId/stdin',
      operationId: 'writeBoxCommandStdin',
      summary: 'Write to the stdin of a background command started with stdinOpen; eof closes it',
      tags: V1,
      auth: 'key',
      params: CommandParamsSchema,
      body: CommandStdinRequestSchema,
      bodyLimit: EXEC_BODY_LIMIT_BYTES,
      responses: { 200: { description: 'What was taken', schema: CommandStdinResultSchema } },
      errors: [...ON_BOX, 'command_not_found', 'capacity_exhausted', 'payload_too_large'],
      handler: ({ params, body, actor }) =>
        deps.commands.input({
          actor,
          id: params.id,
          commandId: params.commandId,
          data: Buffer.from(body.data, 'base64'),
          eof: body.eof,
        }),
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/boxes/:id/commands/:commandId/output',
      operationId: 'readBoxCommandOutput',
      summary:
        "A background command's output from the offsets given: NDJSON, ending with exit, or running (follow=false)",
      tags: V1,
      auth: 'key',
      params: CommandParamsSchema,
      query: CommandOutputQuerySchema,
      responses: {
        200: {
          description:
            'One event per line: stdout and stderr (base64), then exit; or, without follow and while it runs, running with the offsets to read on from',
          contentType: 'application/x-ndjson',
          schema: CommandOutputEventSchema,
        },
      },
      errors: [...ON_BOX, 'command_not_found', 'file_not_found', 'not_implemented', 'process_not_found'],
      handler: ({ params, query, actor, reply, signal }) =>
        streamResponse(
          reply,
          signal,
          {
            contentType: 'application/x-ndjson',
            // A follow may wait long for a quiet command's next line: the client has its answer now.
            headersFirst: query.follow === 'true',
            lateError: (err) => streamErrorFrame(err, reply.request.id),
          },
          (write) =>
            deps.commands.output(
              {
                actor,
                id: params.id,
                commandId: params.commandId,
                follow: query.follow === 'true',
                stdoutOffset: query.stdoutOffset,
                stderrOffset: query.stderrOffset,
                signal,
              },
              (event) => write(`${JSON.stringify(event)}\n`),
            ),
        ),
    }),
    defineRoute({
      method: 'DELETE',
      url: '/v1/boxes/:id/commands/:commandId',
      operationId: 'deleteBoxCommand',
      summary: 'End a background command if it still runs, and drop it and its output',
      tags: V1,
      auth: 'key',
      params: CommandParamsSchema,
      responses: { 200: { description: 'Deleted', schema: CommandDeleteResponseSchema } },
      errors: [...ON_BOX, 'command_not_found'],
      handler: async ({ params, actor }) => {
        await deps.commands.remove({ actor, id: params.id, commandId: params.commandId });
        return { id: params.commandId, deleted: true as const };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/boxes/:id/files',
      operationId: 'readBoxFile',
      summary: 'Download a file (bytes), or list a directory (JSON)',
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      query: FileQuerySchema,
      responses: {
        200: {
          description: 'The file’s bytes, or a listing when the path is a directory',
          contentType: 'application/octet-stream',
          alternatives: [{ contentType: 'application/json', schema: FileListResponseSchema }],
        },
      },
      errors: [...ON_BOX, 'path_outside_workspace', 'file_not_found'],
      handler: async ({ params, query, actor, reply, signal }) => {
        const ref = { actor, id: params.id, path: query.path, signal };
        const info = await deps.files.stat(ref);
        if (info.type === 'directory') return deps.files.list(ref);
        // A symlink to a directory lists it (`/bin` on Debian); one to a file is read below.
        if (info.type === 'symlink') {
          const listing = await deps.files.list(ref).catch((err: unknown) => {
            if (err instanceof AgentboxError && err.code === 'file_not_found') return undefined;
            throw err;
          });
          if (listing) return listing;
        }
        return streamResponse(reply, signal, { contentType: 'application/octet-stream' }, (write) =>
          deps.files.read({ ...ref, sink: write }),
        );
      },
    }),
    defineRoute({
      method: 'PUT',
      url: '/v1/boxes/:id/files',
      operationId: 'writeBoxFile',
      summary: 'Upload a file (streamed; parent directories are made; replaced atomically)',
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      query: FileQuerySchema,
      rawBody: { contentType: 'application/octet-stream', description: 'The file’s bytes' },
      responses: { 200: { description: 'Written', schema: FileWriteResponseSchema } },
      errors: [...ON_BOX, 'path_outside_workspace', 'unsupported_media_type', 'file_not_found'],
      // Ended (key revoked, client gone): the signal cancels the write in the guest, which drops its
      // temp file; the bytes that come after never land.
      handler: ({ params, query, body, actor, signal }) =>
        deps.files.write({
          actor,
          id: params.id,
          path: query.path,
          source: body as unknown as Readable,
          signal,
        }),
    }),
    defineRoute({
      method: 'DELETE',
      url: '/v1/boxes/:id/files',
      operationId: 'deleteBoxFile',
      summary: 'Delete a file or a directory tree',
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      query: FileQuerySchema,
      responses: { 200: { description: 'Deleted', schema: FileDeleteResponseSchema } },
      errors: [...ON_BOX, 'path_outside_workspace', 'file_not_found'],
      handler: ({ params, query, actor, signal }) =>
        deps.files.remove({ actor, id: params.id, path: query.path, signal }),
    }),
    defineRoute({
      method: 'GET',
      url: '/v1/boxes/:id/processes',
      operationId: 'listBoxProcesses',
      summary: 'Processes in the box',
      tags: V1,
      auth: 'key',
      params: BoxParamsSchema,
      responses: { 200: { description: 'Processes', schema: ProcessListResponseSchema } },
      errors: ON_BOX,
      handler: async ({ params, actor, signal }) => ({
        processes: await deps.files.processes({ actor, id: params.id, signal }),
      }),
    }),
    defineRoute({
      method: 'DELETE',
      url: '/v1/boxes/:id/processes/:pid',
      operationId: 'killBoxProcess',
      summary: 'Send a signal (default SIGKILL) to a process in the box',
      tags: V1,
      auth: 'key',
      params: ProcessParamsSchema,
      query: KillProcessQuerySchema,
      responses: { 200: { description: 'Signalled', schema: KillProcessResponseSchema } },
      errors: [...ON_BOX, 'process_not_found'],
      handler: ({ params, query, actor, signal }) =>
        deps.files.killProcess({
          actor,
          id: params.id,
          pid: params.pid,
          signal: query.signal,
          abort: signal,
        }),
    }),
  ];
}
