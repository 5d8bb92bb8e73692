import { z } from 'zod';
import { EgressAuditRecordSchema, EgressPolicySchema, RepoGrantSchema } from './egress.js';
import { ERROR_CODE_LIST, type ErrorCode } from './errors.js';
import {
  EntryInfoSchema,
  JOURNAL_INPUT_MAX_BYTES,
  KeepBytesSchema,
  OmittedCountSchema,
  ProcessInfoSchema,
} from './guest.js';
import { queryInteger } from './query.js';

/**
 * Bodies of the daemon's HTTP API: the seed-compatible surface (snake_case, shapes kept verbatim)
 * and `/v1`. OpenAPI is generated from these schemas; nothing duplicates them by hand.
 */

// ---- shared ----

export const ErrorBodySchema = z
  .object({
    error: z
      .object({
        code: z
          .enum(ERROR_CODE_LIST as [ErrorCode, ...ErrorCode[]])
          .describe('Stable machine-readable code.'),
        message: z.string().describe('What went wrong and what to do about it.'),
        details: z.record(z.string(), z.unknown()).optional().describe('Structured context, e.g. the field.'),
        requestId: z.string().describe('Id of the request, also in the daemon log and X-Request-Id.'),
      })
      .strict(),
  })
  .strict();
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

/** Runtimes of the seed API; each names an image profile (today all use the one agentbox image). */
export const RUNTIMES = ['claude-agent', 'python', 'node', 'bash'] as const;
export const RuntimeSchema = z.enum(RUNTIMES).describe('Image profile of the box.');
export type Runtime = z.infer<typeof RuntimeSchema>;

export const UserIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*$/, 'letters, digits and . _ @ - only')
  .describe('Caller-chosen user identifier; one persistent box per user.');

const EnvVarsSchema = z
  .record(
    z
      .string()
      .max(256)
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a valid environment variable name'),
    z.string().max(128 * 1024),
  )
  .refine((env) => Object.keys(env).length <= 256, 'at most 256 variables');

export const BoxIdSchema = z
  .string()
  .regex(/^box-[a-z0-9]{10}$/, 'a box id looks like box-0123456789')
  .describe('Box id.');

// ---- seed-compatible surface ----

export const CreateMicrovmRequestSchema = z
  .object({
    user_id: UserIdSchema,
    runtime: RuntimeSchema,
    env_vars: EnvVarsSchema.default({}).describe('Environment variables of every command run in the box.'),
  })
  .strict();
export type CreateMicrovmRequest = z.input<typeof CreateMicrovmRequestSchema>;

export const CreateMicrovmResponseSchema = z
  .object({
    status: z.enum(['created', 'exists']).describe('`exists` when the user already had a live box.'),
    vm_ip: z
      .string()
      .nullable()
      .describe('Always null: boxes have no network interface; reach them through this API.'),
    pid: z.number().int().nullable().describe('Host pid of the VM process.'),
  })
  .strict();
export type CreateMicrovmResponse = z.infer<typeof CreateMicrovmResponseSchema>;

export const UserQuerySchema = z.object({ user_id: UserIdSchema }).strict();

export const DownloadFileQuerySchema = z
  .object({
    user_id: UserIdSchema,
    filename: z
      .string()
      .min(1)
      .max(4096)
      .describe('Path relative to /workspace; `..` and absolute paths are refused.'),
  })
  .strict();

export const ListWorkspaceFilesResponseSchema = z
  .object({
    files: z
      .array(z.string())
      .describe(
        'Regular files under /workspace, relative to it, sorted. A symlink to a regular file is listed ' +
          '(download_file reads through it, as /v1 does); one to a directory is not descended into.',
      ),
    // Optional so the seed's shape stays verbatim when nothing was left out.
    omitted: OmittedCountSchema.positive()
      .optional()
      .describe(
        'Entries left out because their name is not valid UTF-8 (JSON cannot carry it; a directory counts once, what is under it is not listed); absent when none.',
      ),
  })
  .strict();

export const SeedProcessSchema = z
  .object({
    pid: z.number().int().describe('Process id in the box.'),
    cmd: z.string().describe('Program.'),
    args: z.array(z.string()).describe('Arguments after the program.'),
    cwd: z.string().nullable().describe('Working directory when known.'),
  })
  .strict();
export const ListProcessesResponseSchema = z.object({ processes: z.array(SeedProcessSchema) }).strict();

export const KillMicrovmRequestSchema = z.object({ user_id: UserIdSchema }).strict();
export const KillMicrovmResponseSchema = z
  .object({ status: z.literal('killed'), user_id: UserIdSchema })
  .strict();

export const HealthResponseSchema = z
  .object({
    status: z.literal('ok').describe('The daemon is serving.'),
    version: z.string().describe('agentbox version.'),
    uptimeSeconds: z.number().nonnegative().describe('Seconds since the daemon started.'),
  })
  .strict();

export const BoxStateSchema = z
  .enum(['creating', 'running', 'paused', 'hibernated', 'stopped', 'deleted', 'failed'])
  .describe(
    'creating → running ⇄ paused (vCPUs stopped) / hibernated (saved to disk, no VM process) → stopped → deleted, or failed. ' +
      'A paused or hibernated box is resumed by the next request that uses it.',
  );
export type BoxState = z.infer<typeof BoxStateSchema>;

export const StatusResponseSchema = z
  .object({
    active_microvms: z
      .number()
      .int()
      .describe('Boxes that are creating, running or paused (a VM process exists).'),
    available_runtimes: z.array(RuntimeSchema),
    microvms: z
      .record(
        z.string(),
        z
          .object({
            ip: z.string().nullable().describe('Always null: no network interface.'),
            runtime: RuntimeSchema,
            pid: z.number().int().nullable(),
            alive: z.boolean().describe('The VM process is running.'),
            created_at: z.number().describe('Unix time in seconds.'),
            age_seconds: z.number().int(),
            box_id: BoxIdSchema,
            state: BoxStateSchema,
            owner_key_id: z.string().describe('The API key whose user id it is (user ids are per key).'),
          })
          .strict(),
      )
      .describe(
        'Live boxes that have a user_id, keyed by it; a user id that several keys use is keyed ' +
          '`key_id/user_id` for each of them.',
      ),
    host: z
      .object({
        boxLimit: z.number().int().describe('Most live boxes this host takes.'),
        boxesByState: z.record(BoxStateSchema, z.number().int()),
        memTotalBytes: z.number().int(),
        memFreeBytes: z.number().int(),
        loadAverage: z.array(z.number()),
        cpus: z.number().int(),
        uptimeSeconds: z.number(),
      })
      .strict(),
  })
  .strict();
export type StatusResponse = z.infer<typeof StatusResponseSchema>;

export const MaintenanceResponseSchema = z
  .object({
    checked: z.number().int().describe('Live boxes looked at.'),
    reaped: z
      .array(
        z
          .object({
            boxId: BoxIdSchema,
            reason: z.enum(['ttl_expired', 'vm_died']),
          })
          .strict(),
      )
      .describe('Boxes cleaned up by this run.'),
  })
  .strict();
export type MaintenanceResult = z.infer<typeof MaintenanceResponseSchema>;

// ---- /v1 ----

export const LabelsSchema = z
  .record(z.string().min(1).max(63), z.string().max(256))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels')
  .describe('Free-form key/value labels.');

export const CreateBoxRequestSchema = z
  .object({
    userId: UserIdSchema.optional().describe('Optional user id; at most one live box per user id.'),
    runtime: RuntimeSchema.default('bash'),
    memoryMib: z.number().int().min(128).max(65536).optional().describe('Guest memory in MiB.'),
    vcpus: z.number().int().min(1).max(64).optional().describe('Virtual CPUs.'),
    diskGib: z.number().int().min(1).max(2048).optional().describe('Disk size in GiB.'),
    ttlSeconds: z
      .number()
      .int()
      .min(1)
      .max(30 * 24 * 3600)
      .optional()
      .describe('Box is deleted this long after creation; none by default.'),
    labels: LabelsSchema.default({}),
    env: EnvVarsSchema.default({}).describe('Environment variables of every command run in the box.'),
    egress: EgressPolicySchema.optional().describe(
      'Network egress policy. Default by runtime: claude-agent gets the anthropic preset, others reach nothing. ' +
        'allowLan, allowHost, non-public allowIPs, ports beyond 80 and 443, and upstreams need an admin key ' +
        '(403 forbidden for a user key).',
    ),
  })
  .strict();
export type CreateBoxRequest = z.input<typeof CreateBoxRequestSchema>;

export const BoxStartModeSchema = z
  .enum(['cold', 'clone', 'pool', 'wake', 'disk'])
  .describe(
    'cold: booted; clone: restored from the template snapshot; pool: taken from the warm pool of clones; ' +
      'wake: restored from its own hibernation snapshot; disk: booted from its own disk (snapshot unusable).',
  );
export type BoxStartMode = z.infer<typeof BoxStartModeSchema>;

export const BoxSchema = z
  .object({
    id: BoxIdSchema,
    state: BoxStateSchema,
    userId: z.string().nullable(),
    runtime: RuntimeSchema,
    memoryMib: z.number().int(),
    vcpus: z.number().int(),
    diskGib: z.number().int(),
    ttlSeconds: z.number().int().nullable(),
    labels: z.record(z.string(), z.string()),
    pid: z.number().int().nullable().describe('Host pid of the VM while it runs.'),
    createdAt: z.string().describe('ISO 8601.'),
    updatedAt: z.string().describe('ISO 8601.'),
    expiresAt: z.string().nullable().describe('When the reaper deletes the box (ISO 8601).'),
    bootMs: z.number().int().nullable().describe('Boot time of the VM in ms.'),
    failureReason: z.string().nullable().describe('Why the box is failed.'),
    egress: EgressPolicySchema.nullable().describe('Egress policy of the box; null when egress is disabled.'),
    startMode: BoxStartModeSchema.nullable().describe('How the VM last started; null before it did.'),
    heldFor: z
      .enum(['disk'])
      .nullable()
      .describe(
        'Why the daemon holds the box paused whatever is asked of it: `disk` while the host is short of disk space and the box was filling it (its requests get 429 until space is freed); null otherwise.',
      ),
  })
  .strict();
export type Box = z.infer<typeof BoxSchema>;

export const EgressAuditQuerySchema = z
  .object({
    after: queryInteger(0).default(0).describe('Only records after this sequence number.'),
    limit: queryInteger(1, 1000).default(200),
  })
  .strict();

export const EgressAuditResponseSchema = z
  .object({
    records: z.array(EgressAuditRecordSchema.extend({ seq: z.number().int() })),
    next: z.number().int().nullable().describe('Pass as `after` for the next page; null at the end.'),
  })
  .strict();

export const BoxListResponseSchema = z.object({ boxes: z.array(BoxSchema) }).strict();
export const BoxParamsSchema = z.object({ id: BoxIdSchema }).strict();

const ExecRequestFields = z
  .object({
    argv: z
      .array(z.string().max(128 * 1024))
      .min(1)
      .max(4096)
      .optional()
      .describe('Program and arguments, no shell. Exactly one of argv and command.'),
    command: z
      .string()
      .min(1)
      .max(128 * 1024)
      .optional()
      .describe('Shell command line, run with `sh -c`. Exactly one of argv and command.'),
    env: EnvVarsSchema.optional().describe('Added to the box environment.'),
    cwd: z.string().min(1).max(4096).optional().describe('Working directory; default /workspace.'),
    timeoutMs: z
      .number()
      .int()
      .min(1)
      .max(24 * 3600 * 1000)
      .optional()
      .describe('Kill the process group after this long.'),
    stdin: z
      .string()
      .max(8 * 1024 * 1024)
      .optional()
      .describe('Base64 bytes fed to stdin, which is then closed.'),
  })
  .strict();
const oneOfArgvAndCommand = (r: { argv?: unknown; command?: unknown }) =>
  (r.argv === undefined) !== (r.command === undefined);
const ONE_OF_ARGV_AND_COMMAND = { message: 'give exactly one of argv and command', path: ['argv'] };

export const ApiExecRequestSchema = ExecRequestFields.refine(oneOfArgvAndCommand, ONE_OF_ARGV_AND_COMMAND);
export type ApiExecRequest = z.input<typeof ApiExecRequestSchema>;

/** What a background command keeps of each of its streams by default: its last 32 MiB. */
export const DEFAULT_KEEP_OUTPUT_BYTES = 32 * 1024 * 1024;

export const StartCommandRequestSchema = ExecRequestFields.extend({
  keepOutputBytes: KeepBytesSchema.optional().describe(
    `Keep about the last this many bytes of each of its streams on the box's disk (default ${DEFAULT_KEEP_OUTPUT_BYTES / 1024 ** 2} MiB); ` +
      'older output is dropped (never ahead of a reader following it), and a read from before it is told `skipped`.',
  ),
  stdinOpen: z
    .boolean()
    .optional()
    .describe(
      'Keep its stdin open: write to it with `POST …/commands/{commandId}/stdin` until one says `eof` (it then ' +
        'reads end-of-file), it exits, or the guest agent restarts. Not with `stdin`.',
    ),
})
  .strict()
  .refine(oneOfArgvAndCommand, ONE_OF_ARGV_AND_COMMAND)
  .refine((r) => !(r.stdinOpen && r.stdin !== undefined), {
    message: 'give stdin or stdinOpen, not both',
    path: ['stdinOpen'],
  });
export type StartCommandRequest = z.input<typeof StartCommandRequestSchema>;

export const CommandStdinRequestSchema = z
  .object({
    data: z
      .string()
      .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'data must be base64')
      .max(Math.ceil(JOURNAL_INPUT_MAX_BYTES / 3) * 4)
      .default('')
      .describe(`Base64 bytes for its stdin, at most ${JOURNAL_INPUT_MAX_BYTES / 1024 ** 2} MiB.`),
    eof: z.boolean().default(false).describe('Then close its stdin: it reads end-of-file.'),
  })
  .strict();
export type CommandStdinRequest = z.input<typeof CommandStdinRequestSchema>;

export const CommandStdinResultSchema = z
  .object({ bytes: z.number().int().nonnegative().describe('Bytes taken (queued for it to read).') })
  .strict();

export const ExecQuerySchema = z
  .object({
    stream: z
      .enum(['true', 'false'])
      .default('true')
      .describe('true: NDJSON events as they happen; false: one JSON result at the end.'),
  })
  .strict();

const ExitFields = {
  exitCode: z.number().int().nullable().describe('Exit status, null when killed by a signal.'),
  signal: z.string().nullable().describe('Signal that ended the process.'),
  timedOut: z.boolean(),
  durationMs: z.number().nonnegative(),
};

export const ExecEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('started'), pid: z.number().int() }).strict(),
  z.object({ type: z.literal('stdout'), data: z.string().describe('Base64 bytes.') }).strict(),
  z.object({ type: z.literal('stderr'), data: z.string().describe('Base64 bytes.') }).strict(),
  z.object({ type: z.literal('exit'), ...ExitFields }).strict(),
  z.object({ type: z.literal('error'), error: ErrorBodySchema.shape.error }).strict(),
]);
export type ExecEvent = z.infer<typeof ExecEventSchema>;

export const ExecResultSchema = z
  .object({
    ...ExitFields,
    stdout: z.string().describe('Base64 bytes.'),
    stderr: z.string().describe('Base64 bytes.'),
    truncated: z.boolean().describe('Output past the collection limit was dropped.'),
  })
  .strict();
export type ExecResult = z.infer<typeof ExecResultSchema>;

// ---- background commands ----

export const CommandIdSchema = z
  .string()
  .regex(/^cmd-[a-f0-9]{12}$/, 'a command id looks like cmd-0123456789ab')
  .describe('Background command id.');
export const CommandParamsSchema = z.object({ id: BoxIdSchema, commandId: CommandIdSchema }).strict();

/** Background commands a box may have running at once. */
export const MAX_RUNNING_COMMANDS_PER_BOX = 32;

export const CommandSchema = z
  .object({
    id: CommandIdSchema,
    boxId: BoxIdSchema,
    argv: z.array(z.string()).describe('What runs (`sh -c <command>` for a command line).'),
    cwd: z.string().nullable().describe('Working directory in the box; null: /workspace.'),
    pid: z.number().int().nullable().describe('Its process in the box; null when it never started.'),
    state: z
      .enum(['running', 'exited', 'lost'])
      .describe(
        '`lost`: the process is gone without an exit status (the box was stopped or rebooted, or its VM died).',
      ),
    exitCode: z.number().int().nullable().describe('Exit status once exited; null when a signal ended it.'),
    signal: z.string().nullable(),
    timedOut: z.boolean(),
    durationMs: z.number().nonnegative().nullable(),
    startedAt: z.string().describe('ISO 8601.'),
    finishedAt: z.string().nullable().describe('ISO 8601, once exited or lost.'),
    failureReason: z.string().nullable().describe('Why it is `lost`.'),
  })
  .strict();
export type Command = z.infer<typeof CommandSchema>;

export const CommandListResponseSchema = z.object({ commands: z.array(CommandSchema) }).strict();
export const CommandDeleteResponseSchema = z
  .object({ id: CommandIdSchema, deleted: z.literal(true) })
  .strict();
export type CommandDeleteResponse = z.infer<typeof CommandDeleteResponseSchema>;

export const CommandOutputQuerySchema = z
  .object({
    follow: z
      .enum(['true', 'false'])
      .default('false')
      .describe('true: stream the output as it comes until the command ends; false: what it printed so far.'),
    stdoutOffset: queryInteger(0)
      .default(0)
      .describe('Skip this many bytes of stdout (what the caller has).'),
    stderrOffset: queryInteger(0).default(0).describe('Skip this many bytes of stderr.'),
  })
  .strict();

export const CommandOutputEventSchema = z.discriminatedUnion('type', [
  ...ExecEventSchema.options,
  z
    .object({
      type: z.literal('skipped'),
      stream: z.enum(['stdout', 'stderr']),
      offset: z.number().int().nonnegative(),
    })
    .strict()
    .describe(
      "That stream's output before `offset` was dropped (the command keeps only its last `keepOutputBytes`); it goes on from there.",
    ),
  z
    .object({
      type: z.literal('running'),
      stdoutOffset: z.number().int().nonnegative(),
      stderrOffset: z.number().int().nonnegative(),
    })
    .strict()
    .describe('The output so far ends here and the command still runs: read on from these offsets.'),
]);
export type CommandOutputEvent = z.infer<typeof CommandOutputEventSchema>;

export const FileQuerySchema = z
  .object({
    path: z
      .string()
      .min(1)
      .max(4096)
      .describe('Absolute, or relative to /workspace; `..` segments are refused.'),
  })
  .strict();

export const FileListResponseSchema = z
  .object({ path: z.string(), entries: z.array(EntryInfoSchema), omitted: OmittedCountSchema })
  .strict()
  .describe('Returned instead of bytes when the path is a directory.');
export type FileListResponse = z.infer<typeof FileListResponseSchema>;
export const FileWriteResponseSchema = z
  .object({ path: z.string(), bytes: z.number().int().nonnegative() })
  .strict();
export type FileWriteResponse = z.infer<typeof FileWriteResponseSchema>;
export const FileDeleteResponseSchema = z.object({ path: z.string(), deleted: z.literal(true) }).strict();
export type FileDeleteResponse = z.infer<typeof FileDeleteResponseSchema>;

export const ProcessListResponseSchema = z.object({ processes: z.array(ProcessInfoSchema) }).strict();
export const ProcessParamsSchema = z
  .object({
    id: BoxIdSchema,
    pid: z
      .string()
      .regex(/^[1-9][0-9]{0,9}$/, 'a positive whole number')
      .transform(Number)
      .describe('Process id in the box.'),
  })
  .strict();
export const KillProcessQuerySchema = z
  .object({
    signal: z
      .string()
      .regex(/^SIG[A-Z0-9]+$/, 'a signal name like SIGTERM')
      .max(16)
      .default('SIGKILL'),
  })
  .strict();
export const KillProcessResponseSchema = z.object({ pid: z.number().int(), signal: z.string() }).strict();
export type KillProcessResponse = z.infer<typeof KillProcessResponseSchema>;

// ---- API keys (admin): what `agentbox keys` does, for an operator without a shell on the host ----

const KeyLimitSchema = z.number().int().min(0).max(1_000_000).nullable();

export const ApiKeyGrantsSchema = z
  .object({
    repos: z
      .array(RepoGrantSchema)
      .max(1000)
      .describe("GitHub repositories the host's token may serve the key's boxes (admin keys: any)."),
    maxBoxes: KeyLimitSchema.describe('Live boxes the key may hold at once; null: only the host limit.'),
    maxTasks: KeyLimitSchema.describe('Tasks queued or running at once; null: only the host queue.'),
    maxMemoryMib: KeyLimitSchema.describe(
      "The guest memory (MiB) of all the key's live boxes together, hibernated ones included; null: no cap.",
    ),
    maxDiskGib: KeyLimitSchema.describe(
      "The disk size (GiB) of all the key's live boxes together: what they may fill on the host; null: no cap.",
    ),
    maxSpendUsd: z
      .number()
      .nonnegative()
      .max(1_000_000_000)
      .nullable()
      .describe(
        "What the key's boxes may spend on model calls in all (`spentUsd`), by the host's count; null: no cap. Calls past it are refused.",
      ),
  })
  .strict()
  .describe("What a key may use beyond its own boxes (see README's keys).");

export const ApiKeyIdSchema = z
  .string()
  .regex(/^key_[0-9a-f]{12}$/, 'an API key id (key_ and 12 hex digits)')
  .describe('API key id, as `agentbox keys list` shows it.');

export const ApiKeySchema = z
  .object({
    id: ApiKeyIdSchema,
    name: z.string(),
    scope: z.enum(['admin', 'user']),
    prefix: z.string().describe('The first characters of the secret, to tell keys apart.'),
    createdAt: z.number().int().describe('Unix time in ms.'),
    revokedAt: z.number().int().nullable(),
    lastUsedAt: z.number().int().nullable().describe('Refreshed at most once a minute.'),
    grants: ApiKeyGrantsSchema,
    spentUsd: z
      .number()
      .nonnegative()
      .describe(
        "What the key's boxes' model calls have cost since `spentSince`, by the host's count (`maxSpendUsd` caps it).",
      ),
    spentSince: z
      .number()
      .int()
      .describe('Unix time in ms the count started: when the key was made, or its spend last reset.'),
  })
  .strict()
  .describe('An API key; never its secret (only its sha256 is stored).');

export type ApiKey = z.infer<typeof ApiKeySchema>;

export const ApiKeyListSchema = z.object({ keys: z.array(ApiKeySchema) }).strict();

export const CreateApiKeyRequestSchema = z
  .object({
    name: z.string().min(1).max(200).default('api key'),
    scope: z.enum(['admin', 'user']).default('user'),
    grants: ApiKeyGrantsSchema.partial().optional(),
  })
  .strict();

export type CreateApiKeyRequest = z.input<typeof CreateApiKeyRequestSchema>;

export const CreatedApiKeySchema = ApiKeySchema.extend({
  key: z.string().describe('The secret: shown in this answer only, never again.'),
}).strict();

export type CreatedApiKey = z.infer<typeof CreatedApiKeySchema>;

export const UpdateApiKeyGrantsRequestSchema = ApiKeyGrantsSchema.partial().describe(
  'Fields left out stay as they are; `repos` replaces the list.',
);

export type ApiKeyGrantsUpdate = z.input<typeof UpdateApiKeyGrantsRequestSchema>;

export const ApiKeyParamsSchema = z.object({ id: ApiKeyIdSchema }).strict();
