import { z } from 'zod';
import { canonicalizeHost, isNumericHostName } from './egress.js';
import { queryInteger } from './query.js';

/**
 * Agent tasks: what goes in (TaskSpec), what comes out (TaskEvent), and the task record the daemon
 * keeps. One contract for the API, the runners, the store and the CLI.
 */

export const AGENT_KINDS = ['claude', 'codex', 'opencode', 'shell'] as const;
export const AgentKindSchema = z.enum(AGENT_KINDS).describe('Which agent CLI runs the task.');
export type AgentKind = z.infer<typeof AgentKindSchema>;

export const EFFORTS = ['low', 'medium', 'high', 'xhigh', 'max'] as const;
export const EffortSchema = z.enum(EFFORTS).describe('Reasoning effort passed to the agent.');
export type Effort = z.infer<typeof EffortSchema>;

export const LIBRARY_KINDS = ['skill', 'agent', 'mcp', 'hooks', 'rules', 'settings'] as const;
export const LibraryKindSchema = z.enum(LIBRARY_KINDS).describe('Kind of library item.');
export type LibraryKind = z.infer<typeof LibraryKindSchema>;

/** `_global` or a project name; also a path component on the host, hence the tight alphabet. */
export const LibraryNamespaceSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^(_global|[A-Za-z0-9][A-Za-z0-9._-]*)$/, '`_global` or letters, digits and . _ -')
  .refine((s) => s !== '.' && s !== '..' && !s.includes('..'), 'no `..`')
  .describe('Library namespace: `_global` or a project name.');

export const LibraryNameSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits and . _ -')
  .refine((s) => !s.includes('..'), 'no `..`')
  .describe('Name of a library item.');

export const LibraryRefSchema = z
  .object({
    kind: LibraryKindSchema,
    name: LibraryNameSchema,
    namespace: LibraryNamespaceSchema.optional().describe(
      'Where to look; default: the task project, then `_global`.',
    ),
  })
  .strict();
export type LibraryRef = z.infer<typeof LibraryRefSchema>;

/**
 * A path relative to the workspace: no absolute paths, no `..`, no empty or `.` segments, no NUL.
 * Checked here so a bad name is a 400 naming the field, before any box is touched.
 */
export const WorkspaceFileNameSchema = z
  .string()
  .min(1)
  .max(1024)
  .refine((name) => !name.startsWith('/'), 'must be relative to the workspace')
  .refine((name) => !name.includes('\0') && !name.includes('\\'), 'no NUL or backslash')
  .refine(
    (name) => name.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..'),
    'no `..`, `.` or empty path segments',
  );

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Env var names whose values look like credentials: `*_TOKEN`, `*_KEY`, `*_APIKEY`,
 * `*_CREDENTIAL(S)`, anything with `SECRET`, `PASSWORD`, `PASSWD` or `PASSPHRASE`. Case-insensitive.
 */
const CREDENTIAL_NAME = /(^|_)(TOKEN|KEY|APIKEY|CREDENTIALS?)$|SECRET|PASSWORD|PASSWD|PASSPHRASE/i;

/**
 * Whether an env var name looks like it holds a credential (GH_TOKEN, AWS_SECRET_ACCESS_KEY,
 * PGPASSWORD, …): such values are redacted wherever a task is stored or shown. A pattern, so it
 * errs towards redacting; it does not change what the task's agent gets.
 */
export function isCredentialEnvName(name: string): boolean {
  return CREDENTIAL_NAME.test(name);
}

export const TaskEnvSchema = z
  .record(z.string().regex(ENV_NAME, 'env var names are letters, digits and _'), z.string().max(32_768))
  .refine((env) => Object.keys(env).length <= 128, 'at most 128 env vars')
  .describe('Extra environment of the agent process.');

/**
 * Why a repository URL is refused, or undefined. https only: an ssh or http URL would need keys in
 * the guest or send the code in clear. Its host must be a name, since the task opens its box's
 * egress to that host by name (allowDomains), and a task never opens an address (that is an
 * admin's `allowIPs`); a host the egress policy could not list is refused here, not when it runs.
 */
function gitRepoUrlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an https:// URL without credentials';
  }
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '')
    return 'must be an https:// URL without credentials';
  const host = canonicalizeHost(url.hostname);
  if (host?.kind === 'ip' || (host && isNumericHostName(host.host)))
    return `must name a host, not an IP address (${url.hostname}): a task's box may reach its repository only by host name`;
  if (!host)
    return `must name a valid host (letters, digits, - and _ in dot-separated labels), not ${url.hostname}`;
  return undefined;
}

export const GitRepoUrlSchema = z
  .string()
  .max(2048)
  .superRefine((value, ctx) => {
    const problem = gitRepoUrlProblem(value);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
  })
  .describe(
    'Repository cloned into the workspace before the run (https only; its host a name, not an IP address).',
  );

export const ToolNameSchema = z.string().min(1).max(256);

export const AgentDefinitionSchema = z
  .object({
    name: LibraryNameSchema,
    description: z.string().max(4096).optional(),
    model: z.string().min(1).max(128).optional(),
    systemPrompt: z.string().max(200_000).optional(),
    tools: z.array(ToolNameSchema).max(256).optional().describe('Tools the agent may use; default all.'),
    disallowedTools: z.array(ToolNameSchema).max(256).optional(),
    maxTokens: z.number().int().positive().max(1_000_000).optional(),
  })
  .strict()
  .describe('A sub-agent / agent persona: name, model, system prompt, tools.');
export type AgentDefinition = z.infer<typeof AgentDefinitionSchema>;

export const ContextMessageSchema = z
  .object({
    role: z.enum(['user', 'assistant']),
    content: z.string().max(1_000_000),
  })
  .strict();
export type ContextMessage = z.infer<typeof ContextMessageSchema>;

export const SESSION_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** The spec's fields, without the cross-field rules (for schemas that extend it). */
export const TaskSpecFieldsSchema = z
  .object({
    prompt: z.string().trim().min(1, 'must not be empty').max(1_000_000),
    agent: AgentKindSchema.default('claude'),
    model: z.string().min(1).max(128).optional(),
    effort: EffortSchema.default('low'),
    gitRepoUrl: GitRepoUrlSchema.optional(),
    envVars: TaskEnvSchema.optional(),
    files: z
      .record(WorkspaceFileNameSchema, z.string().max(16 * 1024 * 1024))
      .refine((f) => Object.keys(f).length <= 256, 'at most 256 files')
      .optional()
      .describe('Workspace-relative file name → UTF-8 content, written before the run.'),
    allowedTools: z
      .array(ToolNameSchema)
      .max(256)
      .optional()
      .describe('The only tools the agent may use (claude, opencode; refused for the others).'),
    disallowedTools: z
      .array(ToolNameSchema)
      .max(256)
      .optional()
      .describe('Tools the agent may not use (claude, opencode; refused for the others).'),
    agentDefinition: z
      .union([AgentDefinitionSchema, z.object({ ref: LibraryNameSchema }).strict()])
      .optional()
      .describe('The agent persona to run as: inline, or `{ref}` to a library `agent` item.'),
    project: LibraryNamespaceSchema.optional().describe('Library namespace resolved over `_global`.'),
    library: z.array(LibraryRefSchema).max(256).optional().describe('Extra library items to materialize.'),
    timeoutSeconds: z.number().int().positive().max(86_400).default(300),
    resume: z.string().regex(SESSION_ID_PATTERN, 'a session id').optional(),
    context: z.array(ContextMessageSchema).max(1000).optional().describe('Prior messages to replay.'),
    maxSpendUsd: z
      .number()
      .positive()
      .max(10_000)
      .optional()
      .describe(
        "Stop the run once its model calls have cost this much. Held on the host, which prices every call from the model API's answer (Anthropic Messages, OpenAI Responses) and refuses calls past it; claude's own flag is set too.",
      ),
  })
  .strict();

/**
 * Spec fields only some agents can enforce. A task for another agent is refused: run without its
 * limit, it would do what the caller asked it not to. (`maxSpendUsd` is not one: the host holds it
 * for every agent, pricing each model call from the API's answer.)
 */
export const AGENT_ONLY_FIELDS = {
  allowedTools: ['claude', 'opencode'],
  disallowedTools: ['claude', 'opencode'],
} as const satisfies Record<string, readonly AgentKind[]>;

/** The agents that run as an `agentDefinition` at all: a `shell` task is a script, with no persona. */
export const AGENT_DEFINITION_AGENTS = [
  'claude',
  'codex',
  'opencode',
] as const satisfies readonly AgentKind[];

/**
 * Agent definition fields only some agents honour (codex takes a definition's model and system
 * prompt, but has no per-agent tool lists or output cap; opencode has no output cap). Refused for
 * the others, as AGENT_ONLY_FIELDS are: dropped, they would let the agent do what was ruled out.
 */
export const AGENT_DEFINITION_ONLY_FIELDS = {
  tools: ['claude', 'opencode'],
  disallowedTools: ['claude', 'opencode'],
  maxTokens: ['claude'],
} as const satisfies Record<string, readonly AgentKind[]>;

/** Whether a spec field holds something to enforce: an empty tool list asks for nothing. */
const given = (value: unknown) => (Array.isArray(value) ? value.length > 0 : value !== undefined);

/**
 * Why `agent` cannot run as `definition` (inline, or a `{ref}` to a library item): one issue per
 * field it would drop, its path relative to the definition (`[]`: the whole of it). Empty: it can.
 * A `{ref}`'s fields are known only once it is resolved; the daemon checks them again then.
 */
export function agentDefinitionIssues(
  agent: AgentKind,
  definition: Readonly<Record<string, unknown>> | undefined,
): { path: string[]; message: string }[] {
  if (definition === undefined) return [];
  if (!(AGENT_DEFINITION_AGENTS as readonly AgentKind[]).includes(agent)) {
    return [
      {
        path: [],
        message: `${agent} cannot run as an agentDefinition; only ${AGENT_DEFINITION_AGENTS.join(', ')} can`,
      },
    ];
  }
  const issues: { path: string[]; message: string }[] = [];
  for (const [field, agents] of Object.entries(AGENT_DEFINITION_ONLY_FIELDS)) {
    if (given(definition[field]) && !(agents as readonly AgentKind[]).includes(agent)) {
      issues.push({
        path: [field],
        message: `${agent} cannot honour agentDefinition.${field}; only ${agents.join(' and ')} can`,
      });
    }
  }
  return issues;
}

export function refineTaskSpec(
  spec: {
    agent?: AgentKind | undefined;
    resume?: string | undefined;
    context?: unknown[] | undefined;
    maxSpendUsd?: number | undefined;
    allowedTools?: string[] | undefined;
    disallowedTools?: string[] | undefined;
    agentDefinition?: AgentDefinition | { ref: string } | undefined;
  },
  ctx: z.RefinementCtx,
) {
  if (spec.resume !== undefined && spec.context !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['context'], message: 'give `resume` or `context`, not both' });
  }
  const agent = spec.agent ?? 'claude';
  for (const [field, agents] of Object.entries(AGENT_ONLY_FIELDS)) {
    if (
      given(spec[field as keyof typeof AGENT_ONLY_FIELDS]) &&
      !(agents as readonly AgentKind[]).includes(agent)
    ) {
      ctx.addIssue({
        code: 'custom',
        path: [field],
        message: `${agent} cannot enforce ${field}; only ${listOf(agents)} can`,
      });
    }
  }
  for (const issue of agentDefinitionIssues(agent, spec.agentDefinition)) {
    ctx.addIssue({ code: 'custom', path: ['agentDefinition', ...issue.path], message: issue.message });
  }
}

/** `a`, `a and b`, `a, b and c`. */
function listOf(items: readonly string[]): string {
  return items.length > 1 ? `${items.slice(0, -1).join(', ')} and ${items.at(-1)}` : (items[0] ?? '');
}

export const TaskSpecSchema = TaskSpecFieldsSchema.superRefine(refineTaskSpec).describe('What a task runs.');
export type TaskSpec = z.infer<typeof TaskSpecSchema>;
export type TaskSpecInput = z.input<typeof TaskSpecSchema>;

export const TASK_EVENT_TYPES = ['status', 'text', 'tool_use', 'tool_result', 'completion', 'error'] as const;
export const TaskEventTypeSchema = z.enum(TASK_EVENT_TYPES);
export type TaskEventType = z.infer<typeof TaskEventTypeSchema>;

export const TaskEventSchema = z
  .object({
    seq: z.number().int().positive().describe('1, 2, 3, … per task; resume with `?after=seq`.'),
    ts: z.string().describe('ISO 8601 time the host recorded the event.'),
    type: TaskEventTypeSchema,
    content: z
      .unknown()
      .describe(
        'text/completion: string; tool_use: {id,name,input}; tool_result: {toolUseId,content,isError}; status: {state,…}; error: {code,message}.',
      ),
    raw: z.string().optional().describe('The agent CLI output line this event came from.'),
    truncated: z
      .literal(true)
      .optional()
      .describe(
        'Set when `raw` or `content` was longer than the host keeps of one event (256 KiB each) and was cut; the rest was not stored.',
      ),
  })
  .strict();
export type TaskEvent = z.infer<typeof TaskEventSchema>;

export const TASK_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out'] as const;
export const TaskStateSchema = z.enum(TASK_STATES);
export type TaskState = z.infer<typeof TaskStateSchema>;
export const TERMINAL_TASK_STATES: ReadonlySet<TaskState> = new Set([
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
]);

export const TaskUsageSchema = z.record(z.string(), z.unknown());

export const TaskResultSchema = z
  .object({
    sessionId: z.string().nullable(),
    numTurns: z.number().int().nonnegative().nullable(),
    costUsd: z.number().nonnegative().nullable().describe('What the agent reported it spent.'),
    meteredCostUsd: z
      .number()
      .nonnegative()
      .optional()
      .describe(
        "What the box's model calls cost while the task ran, priced on the host from the API's answers (calls of other tasks running in the same box at the same time included).",
      ),
    usage: TaskUsageSchema.nullable(),
    text: z.string().nullable().describe('The final answer (the completion event).'),
    exitCode: z.number().int().nullable(),
  })
  .strict();
export type TaskResult = z.infer<typeof TaskResultSchema>;

export const TaskLibraryItemSchema = z
  .object({ kind: LibraryKindSchema, namespace: z.string(), name: z.string(), sha256: z.string() })
  .strict();
export type TaskLibraryItem = z.infer<typeof TaskLibraryItemSchema>;

export const TaskSchema = z
  .object({
    id: z.string(),
    boxId: z.string().nullable(),
    userId: z.string().nullable(),
    state: TaskStateSchema,
    agent: AgentKindSchema,
    queuePosition: z.number().int().positive().nullable().describe('1 = next to run; null unless queued.'),
    spec: TaskSpecFieldsSchema.describe(
      'The spec as run; credential-like env values (`*_TOKEN`, `*_KEY`, `*SECRET*`, `*PASSWORD*`, …) are `[redacted]`.',
    ),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    result: TaskResultSchema.nullable(),
    error: z.object({ code: z.string(), message: z.string() }).strict().nullable(),
    library: z.array(TaskLibraryItemSchema),
    eventCount: z.number().int().nonnegative(),
  })
  .strict();
export type Task = z.infer<typeof TaskSchema>;

// ---- API bodies ----

export const CreateTaskRequestSchema = TaskSpecFieldsSchema.extend({
  boxId: z.string().min(1).max(64).optional().describe('Run in this running box.'),
  userId: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*$/, 'letters, digits and . _ @ - only')
    .optional()
    .describe("Run in this user's persistent box (created if missing)."),
})
  .strict()
  .superRefine((body, ctx) => {
    refineTaskSpec(body, ctx);
    if (body.boxId !== undefined && body.userId !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['userId'], message: 'give `boxId` or `userId`, not both' });
    }
  })
  .describe('A task; without boxId or userId it gets a fresh box, deleted when it ends.');
export type CreateTaskRequest = z.infer<typeof CreateTaskRequestSchema>;

export const TaskParamsSchema = z.object({ id: z.string().min(1).max(64) }).strict();
export const TaskDeleteResponseSchema = z.object({ id: z.string(), deleted: z.literal(true) }).strict();
export type TaskDeleteResponse = z.infer<typeof TaskDeleteResponseSchema>;

/** Where a page of the task list ended: the last task's sort key (newest first, ties by id). */
export interface TaskCursor {
  /** The task's creation time, Unix milliseconds. */
  createdAt: number;
  id: string;
}

/** The opaque `cursor` a client passes back: base64url of `[createdAt, id]`. */
export function encodeTaskCursor(cursor: TaskCursor): string {
  // btoa/atob, not Buffer: this module is also bundled for the dashboard and browser SDK users.
  return btoa(JSON.stringify([cursor.createdAt, cursor.id]))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');
}

/** The cursor `encodeTaskCursor` made, or undefined for anything else (edited, truncated, made up). */
export function decodeTaskCursor(text: string): TaskCursor | undefined {
  let value: unknown;
  try {
    value = JSON.parse(atob(text.replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return undefined;
  }
  if (!Array.isArray(value) || value.length !== 2) return undefined;
  const [createdAt, id] = value as unknown[];
  if (!Number.isSafeInteger(createdAt) || (createdAt as number) < 0) return undefined;
  // Task ids are ASCII (btoa takes nothing wider than Latin-1, so the check below needs it too).
  if (typeof id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) return undefined;
  const cursor = { createdAt: createdAt as number, id };
  // atob forgives missing padding and whitespace: only the exact encoding is ours.
  return encodeTaskCursor(cursor) === text ? cursor : undefined;
}

export const TaskListQuerySchema = z
  .object({
    boxId: z.string().min(1).max(64).optional(),
    limit: queryInteger(1, 1000).default(100),
    cursor: z
      .string()
      .max(512)
      .transform((text, ctx) => {
        const cursor = decodeTaskCursor(text);
        if (cursor === undefined) {
          ctx.addIssue({ code: 'custom', message: 'not a cursor this API gave out (`nextCursor`)' });
          return z.NEVER;
        }
        return cursor;
      })
      .optional()
      .describe('The previous page’s `nextCursor`: the tasks after it.'),
  })
  .strict();

export const TaskListResponseSchema = z
  .object({
    tasks: z.array(TaskSchema),
    nextCursor: z
      .string()
      .nullable()
      .describe('Pass as `cursor` for the next page (same filters); null: there is no more.'),
  })
  .strict();

export const TaskEventsQuerySchema = z
  .object({
    after: queryInteger(0).default(0).describe('Only events with a larger seq.'),
    follow: z
      .enum(['true', 'false'])
      .default('true')
      .transform((v) => v === 'true')
      .describe('Keep the stream open until the task ends (default) or return what is stored.'),
    format: z.enum(['ndjson', 'sse']).optional().describe('Default: from Accept (text/event-stream → sse).'),
  })
  .strict();

/** Seed API `POST /claude_in_the_box`: snake_case, on the user's persistent box. */
export const ClaudeInTheBoxRequestSchema = z
  .object({
    user_id: z
      .string()
      .min(1)
      .max(128)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*$/, 'letters, digits and . _ @ - only'),
    task: z.string().trim().min(1, 'must not be empty').max(1_000_000).describe('The prompt.'),
    files: TaskSpecFieldsSchema.shape.files,
    context: z.array(ContextMessageSchema).max(1000).optional(),
    model: z.string().min(1).max(128).optional(),
    effort: EffortSchema.optional(),
    timeout_seconds: z.number().int().positive().max(86_400).optional(),
  })
  .strict();
export type ClaudeInTheBoxRequest = z.infer<typeof ClaudeInTheBoxRequestSchema>;

/** One line of the seed stream, exactly as the seed API shapes it. */
export const SeedTaskLineSchema = z
  .object({ type: z.enum(['text', 'tool_use', 'completion', 'error']), content: z.unknown() })
  .strict();
