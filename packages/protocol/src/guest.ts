import { z } from 'zod';

/**
 * Messages on the host↔guest channel. The host opens a channel with a `request`; the guest answers on
 * the same channel with zero or more progress messages and exactly one terminal message
 * (`result`, `exit` or `error`). Everything the guest sends is parsed with these schemas on the host:
 * the guest is untrusted.
 */

export const HelloSchema = z
  .object({
    type: z.literal('hello'),
    protocolVersion: z.number().int().describe('Wire protocol version the guest speaks.'),
    imageApiVersion: z.number().int().describe('Image API version the guest was built for.'),
    agentVersion: z.string().max(64).describe('Guest agent version.'),
    bootId: z.string().max(64).describe('Kernel boot id; changes on every boot.'),
    agentPid: z.number().int().describe('PID of the guest agent (changes when it restarts).'),
    egressProxyPort: z
      .number()
      .int()
      .min(1)
      .max(65535)
      .describe('Port of the egress proxy on the guest loopback.'),
    features: z
      .array(z.string().max(64))
      .max(64)
      .optional()
      .describe(
        'What this agent does beyond the protocol version (`exec.journal`); an older agent, in a box ' +
          'made from an older image or snapshot, sends none.',
      ),
  })
  .strict();
export type Hello = z.infer<typeof HelloSchema>;

/** Channels the guest opens (egress connections) have this bit set; the host's never do. */
export const GUEST_CHANNEL_BIT = 0x8000_0000;

/** First message on a guest-opened channel: one client connection to the egress proxy. */
export const EgressOpenSchema = z
  .object({
    type: z.literal('egress'),
    clientPort: z
      .number()
      .int()
      .min(0)
      .max(65535)
      .describe('Source port of the client in the guest, for the audit.'),
  })
  .strict();
export type EgressOpen = z.infer<typeof EgressOpenSchema>;

/** Either side aborts a byte-stream channel (egress, port forward): the other side tears it down. */
export const ChannelResetSchema = z
  .object({ type: z.literal('reset'), reason: z.string().max(512).optional() })
  .strict();

const PathSchema = z.string().min(1).max(4096).describe('Absolute path inside the guest.');
const EnvSchema = z.record(
  z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
    .max(256),
  z.string().max(128 * 1024),
);

/** How much of a journaled exec's stderr an attach sends again, at most (its last bytes). */
export const JOURNAL_STDERR_REPLAY_BYTES = 64 * 1024;

/** The feature a hello names when the agent keeps journaled execs (`journal`, `exec.attach`). */
export const EXEC_JOURNAL_FEATURE = 'exec.journal';

/** The feature a hello names when `exec` and `exec.attach` take `watch` and `exec.stat` is there. */
export const EXEC_WATCH_FEATURE = 'exec.watch';

/** The feature a hello names when a journaled exec takes `keepBytes` (its output trimmed to its tail). */
export const EXEC_KEEP_FEATURE = 'exec.keep';

/** The feature a hello names when a journaled exec can keep its stdin open (`stdinOpen`, `exec.input`). */
export const EXEC_INPUT_FEATURE = 'exec.input';

/**
 * The most one `exec.input` carries, and the most sent to an open stdin that its process has not
 * read yet: past that, more is refused until it reads.
 */
export const JOURNAL_INPUT_MAX_BYTES = 1024 * 1024;

/** The least and most of its output a journaled exec may be told to keep per stream (`keepBytes`). */
export const JOURNAL_MIN_KEEP_BYTES = 1024 * 1024;
export const JOURNAL_MAX_KEEP_BYTES = 4 * 1024 ** 3;
export const KeepBytesSchema = z.number().int().min(JOURNAL_MIN_KEEP_BYTES).max(JOURNAL_MAX_KEEP_BYTES);

/** An attach offset past any file's end: the attach sends none of that stream (an exit watcher). */
export const JOURNAL_END_OFFSET = Number.MAX_SAFE_INTEGER;

/** Names an exec's journal: the host's own id for the run (a task id), safe as a file name. */
export const JournalIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,63}$/)
  .describe('Id of an exec journal: lower-case letters, digits, `_` and `-`, at most 64.');

export const ExecRequestSchema = z
  .object({
    op: z.literal('exec'),
    argv: z
      .array(z.string().max(128 * 1024))
      .min(1)
      .max(4096)
      .describe('Program and arguments; no shell.'),
    env: EnvSchema.optional().describe('Variables added to the guest agent environment.'),
    cwd: PathSchema.optional().describe('Working directory; default /root.'),
    stdin: z.boolean().default(false).describe('Whether the host will stream stdin on this channel.'),
    timeoutMs: z.number().int().positive().optional().describe('Kill the process group after this long.'),
    pty: z
      .object({ rows: z.number().int().min(1).max(1000), cols: z.number().int().min(1).max(1000) })
      .strict()
      .optional()
      .describe(
        'Run on a pseudo-terminal of this size: stdout carries the terminal output (no separate stderr), ' +
          'stdin the keystrokes; the host sends `resize` messages on the channel.',
      ),
    journal: JournalIdSchema.optional().describe(
      'Keep the output in the guest, in files under this id, until the host forgets it (`exec.forget`): a later host ' +
        'session (a restarted daemon) takes the run up with `exec.attach`. The process outlives its host ' +
        'session; stdin, when streamed, is read whole into a file before the process starts. Not with `pty`.',
    ),
    watch: z
      .boolean()
      .optional()
      .describe(
        'With `journal`: once the process started, a cancel ends only this follow (a background command runs on).',
      ),
    keepBytes: KeepBytesSchema.optional().describe(
      "With `journal`: keep about the last this many bytes of each stream on the box's disk; older output " +
        'is dropped (never ahead of a reader following it), and a read from before it is told `skipped`.',
    ),
    stdinOpen: z
      .boolean()
      .optional()
      .describe(
        'With `journal`: its stdin stays open for `exec.input` until one says `eof`, it exits, or the agent ' +
          'restarts (its process then reads end-of-file). Not with `stdin`.',
      ),
  })
  .strict()
  .refine((r) => !(r.journal !== undefined && r.pty !== undefined), {
    message: 'a journaled exec cannot have a pty',
    path: ['journal'],
  })
  .refine((r) => !(r.watch !== undefined && r.journal === undefined), {
    message: 'only a journaled exec can be watched',
    path: ['watch'],
  })
  .refine((r) => !(r.keepBytes !== undefined && r.journal === undefined), {
    message: 'only a journaled exec keeps its output',
    path: ['keepBytes'],
  })
  .refine((r) => !(r.stdinOpen && (r.journal === undefined || r.stdin)), {
    message: 'only a journaled exec without streamed stdin keeps its stdin open',
    path: ['stdinOpen'],
  });
export type ExecRequest = z.input<typeof ExecRequestSchema>;

/**
 * A later host session takes up a journaled exec: its output from these offsets (what the host had
 * kept), then the rest as it comes, then its exit, as an `exec` answers. A cancel kills it, unless
 * the attach only `watch`es. An offset past a file's end sends nothing of that stream.
 */
export const ExecAttachRequestSchema = z
  .object({
    op: z.literal('exec.attach'),
    journal: JournalIdSchema,
    stdoutOffset: z.number().int().nonnegative().describe('Bytes of stdout the host has already.'),
    stderrOffset: z
      .number()
      .int()
      .nonnegative()
      .describe(
        'Bytes of stderr the host has already. Unless `watch`, stderr is sent again from at most its last ' +
          `${JOURNAL_STDERR_REPLAY_BYTES / 1024} KiB: a host keeps its tail only.`,
      ),
    watch: z
      .boolean()
      .optional()
      .describe(
        'Only read the output (a client of a background command): a cancel ends this attach at once, ' +
          'unanswered, never the process; stderr is sent from its offset as given.',
      ),
  })
  .strict();

/** Where a journaled exec stands, without following it. */
export const ExecStatSchema = z
  .object({
    pid: z.number().int().nullable().describe('The process, once it started; null if it never did.'),
    state: z
      .enum(['running', 'exited', 'lost'])
      .describe('`lost`: the process is gone and its exit status with it (the box rebooted).'),
    exit: z.lazy(() => ExecExitSchema.nullable()),
    stdoutBytes: z.number().int().nonnegative(),
    stderrBytes: z.number().int().nonnegative(),
    // Defaults: an agent without `exec.keep` keeps all output.
    stdoutStart: z
      .number()
      .int()
      .nonnegative()
      .default(0)
      .describe('The first byte of stdout still kept (`keepBytes` dropped what came before).'),
    stderrStart: z.number().int().nonnegative().default(0),
  })
  .strict();
export type ExecStat = z.infer<typeof ExecStatSchema>;

/** Host → guest on a pty exec channel: the terminal changed size. */
export const PtyResizeSchema = z
  .object({
    type: z.literal('resize'),
    rows: z.number().int().min(1).max(1000),
    cols: z.number().int().min(1).max(1000),
  })
  .strict();
export type PtyResize = z.infer<typeof PtyResizeSchema>;

/** The identity a restored clone takes on, so no two boxes share one. */
export const GuestIdentitySchema = z
  .object({
    hostname: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/)
      .describe('New hostname (the box id).'),
    machineId: z
      .string()
      .regex(/^[0-9a-f]{32}$/)
      .describe('New /etc/machine-id.'),
    bootId: z
      .string()
      .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
      .describe('New boot id, shown at /proc/sys/kernel/random/boot_id and in the hello.'),
  })
  .strict();
export type GuestIdentity = z.infer<typeof GuestIdentitySchema>;

/**
 * The address of a box's own name in /etc/hosts, as Debian's installer writes it: without such a
 * line libnss-myhostname answers ::1 first, which reads back as `localhost` (Python's getfqdn(),
 * Java's canonical host name). Each boot replaces that line and keeps the rest of the file.
 */
export const OWN_NAME_ADDRESS = '127.0.1.1';

/**
 * A template clone's /etc/hosts: the image's, then its own name's line, as a boot leaves it. The
 * template's file is rewritten whole: it holds only what its boot wrote (no box has used it).
 */
export function etcHostsFor(hostname: string): string {
  return `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${OWN_NAME_ADDRESS}\t${hostname}\n`;
}

/**
 * After a VM resumed from a snapshot or a pause its clock is behind (guest time stood still) and,
 * for a clone, its kernel RNG state, hostname, machine-id and boot id are the template's. The host
 * sends its wall clock, fresh random bytes and, for a clone, a new identity.
 */
export const SystemRestoreSchema = z
  .object({
    op: z.literal('system.restore'),
    nowMs: z.number().positive().describe('Host wall clock (Unix ms) when the request was sent.'),
    entropy: z
      .string()
      .regex(/^[A-Za-z0-9+/]*={0,2}$/)
      .max(1024)
      .optional()
      .describe('Random bytes (base64) to mix into the kernel RNG, which is then reseeded.'),
    nonce: z.string().max(128).optional().describe('Unique per restore; mixed in with the entropy.'),
    identity: GuestIdentitySchema.optional(),
  })
  .strict();

export const RequestSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('ping') }).strict(),
  z.object({ op: z.literal('health') }).strict(),
  ExecRequestSchema,
  ExecAttachRequestSchema,
  z
    .object({ op: z.literal('exec.forget'), journal: JournalIdSchema })
    .strict()
    .describe(
      "Removes a journaled exec's files once the host has kept its exit (a process still running is killed).",
    ),
  z
    .object({ op: z.literal('exec.stat'), journal: JournalIdSchema })
    .strict()
    .describe("Where a journaled exec stands: its process, its exit, its output's size so far."),
  z
    .object({
      op: z.literal('exec.input'),
      journal: JournalIdSchema,
      data: z
        .string()
        .regex(/^[A-Za-z0-9+/]*={0,2}$/)
        .max(Math.ceil(JOURNAL_INPUT_MAX_BYTES / 3) * 4)
        .default('')
        .describe('Base64 bytes for its stdin.'),
      eof: z.boolean().default(false).describe('Then close its stdin: it reads end-of-file.'),
    })
    .strict()
    .describe(
      'Writes to the stdin of a journaled exec started with `stdinOpen`; answers once the bytes are queued.',
    ),
  z.object({ op: z.literal('process.list') }).strict(),
  z
    .object({
      op: z.literal('process.kill'),
      pid: z.number().int().min(2),
      signal: z
        .string()
        .regex(/^SIG[A-Z0-9]+$/)
        .default('SIGKILL'),
    })
    .strict(),
  z.object({ op: z.literal('file.stat'), path: PathSchema }).strict(),
  z.object({ op: z.literal('file.list'), path: PathSchema }).strict(),
  z.object({ op: z.literal('file.read'), path: PathSchema }).strict(),
  z
    .object({
      op: z.literal('file.write'),
      path: PathSchema,
      mode: z.number().int().min(0).max(0o7777).optional(),
      makeParents: z.boolean().default(false),
    })
    .strict(),
  z.object({ op: z.literal('file.mkdir'), path: PathSchema, recursive: z.boolean().default(true) }).strict(),
  z
    .object({ op: z.literal('file.remove'), path: PathSchema, recursive: z.boolean().default(false) })
    .strict(),
  z.object({ op: z.literal('system.sync') }).strict(),
  z
    .object({
      op: z.literal('system.configure'),
      env: EnvSchema.describe('Defaults for every later exec (proxy, CA paths, credential placeholders).'),
    })
    .strict(),
  z
    .object({ op: z.literal('system.quiesce') })
    .strict()
    .describe(
      'Before a snapshot: start the restore helper (so restored copies have it running), flush the disks.',
    ),
  SystemRestoreSchema,
  z
    .object({
      op: z.literal('port.connect'),
      port: z.number().int().min(1).max(65535).describe('TCP port on the guest loopback.'),
    })
    .strict()
    .describe(
      'Port publishing: the guest connects to 127.0.0.1:port and the channel carries the bytes both ways ' +
        'until either side ends; a failed connect is an error reply.',
    ),
  z
    .object({ op: z.literal('net.listeners') })
    .strict()
    .describe('TCP ports listening in the guest on a wildcard or loopback address (for auto-publish).'),
]);
export type Request = z.input<typeof RequestSchema>;
export type ParsedRequest = z.output<typeof RequestSchema>;
export type RequestOp = Request['op'];

/** Host → guest control on an open channel. */
export const CancelSchema = z.object({ type: z.literal('cancel') }).strict();

export const ExecStartedSchema = z.object({ type: z.literal('started'), pid: z.number().int() }).strict();

/** On a journaled exec's follow: that stream's output before `offset` was dropped; it goes on from there. */
export const ExecSkippedSchema = z
  .object({
    type: z.literal('skipped'),
    stream: z.enum(['stdout', 'stderr']),
    offset: z.number().int().nonnegative(),
  })
  .strict();

export const ExecExitSchema = z
  .object({
    type: z.literal('exit'),
    exitCode: z.number().int().nullable().describe('Exit status, or null when killed by a signal.'),
    signal: z.string().max(32).nullable().describe('Signal name that ended the process, if any.'),
    timedOut: z.boolean(),
    durationMs: z.number().nonnegative(),
  })
  .strict();
export type ExecExit = z.infer<typeof ExecExitSchema>;

export const GuestErrorCodeSchema = z.enum([
  'invalid_request',
  'file_not_found',
  'process_not_found',
  'guest_error',
  // `exec.input`: its stdin is not open; its process has not read what was sent before.
  'invalid_state',
  'capacity_exhausted',
]);
export type GuestErrorCode = z.infer<typeof GuestErrorCodeSchema>;
export const GuestErrorSchema = z
  .object({ type: z.literal('error'), code: GuestErrorCodeSchema, message: z.string().max(4096) })
  .strict();

export const ResultSchema = z.object({ type: z.literal('result'), value: z.unknown() }).strict();

/** Header sent before the bytes of a `file.read`. */
export const FileHeaderSchema = z
  .object({ type: z.literal('file'), size: z.number().int().nonnegative() })
  .strict();

export const GuestReplySchema = z.discriminatedUnion('type', [
  ExecStartedSchema,
  ExecSkippedSchema,
  ExecExitSchema,
  GuestErrorSchema,
  ResultSchema,
  FileHeaderSchema,
]);
export type GuestReply = z.infer<typeof GuestReplySchema>;

// ---- result values, one per op ----

export const PongSchema = z.object({ now: z.number() }).strict();

export const HealthSchema = z
  .object({
    uptimeSeconds: z.number().nonnegative(),
    loadAverage: z.array(z.number()).length(3),
    memTotalBytes: z.number().int().nonnegative(),
    memAvailableBytes: z.number().int().nonnegative(),
    diskTotalBytes: z.number().int().nonnegative(),
    diskFreeBytes: z.number().int().nonnegative(),
    processes: z.number().int().nonnegative(),
  })
  .strict();
export type Health = z.infer<typeof HealthSchema>;

export const ProcessInfoSchema = z
  .object({
    pid: z.number().int(),
    ppid: z.number().int(),
    user: z.string().max(64),
    state: z.string().max(8),
    rssBytes: z.number().int().nonnegative(),
    command: z.string().max(4096),
  })
  .strict();
export type ProcessInfo = z.infer<typeof ProcessInfoSchema>;
export const ProcessListSchema = z.array(ProcessInfoSchema).max(100_000);

export const FileTypeSchema = z.enum(['file', 'directory', 'symlink', 'other']);
export const EntryInfoSchema = z
  .object({
    name: z.string().max(4096),
    path: z.string().max(8192),
    type: FileTypeSchema,
    size: z.number().int().nonnegative(),
    mode: z.number().int().nonnegative(),
    modifiedMs: z.number(),
    targetType: FileTypeSchema.exclude(['symlink'])
      .optional()
      .describe(
        'For a symlink: the type of what it resolves to, so a client can tell a link to a file from one ' +
          'to a directory. Absent when the link dangles (or loops), and for anything else.',
      ),
  })
  .strict();
export type EntryInfo = z.infer<typeof EntryInfoSchema>;
export const EntryListSchema = z.array(EntryInfoSchema).max(100_000);
export const OmittedCountSchema = z
  .number()
  .int()
  .nonnegative()
  .describe(
    'Entries left out because their name is not valid UTF-8: JSON cannot carry it, and a lossy ' +
      'decoding would name another file. Reach them with exec (e.g. `ls -b`).',
  );
export const DirListingSchema = z.object({ entries: EntryListSchema, omitted: OmittedCountSchema }).strict();
export type DirListing = z.infer<typeof DirListingSchema>;

export const QuiesceResultSchema = z
  .object({ helper: z.boolean().describe('The restore helper runs (clock, RNG reseed, identity).') })
  .strict();

export const RestoreResultSchema = z
  .object({
    skewMs: z.number().describe('Guest clock minus host clock before it was set (negative: behind).'),
    clockSet: z.boolean(),
    reseeded: z.boolean().describe('The kernel RNG was reseeded (not only mixed).'),
    bootId: z.string().max(64).describe('Boot id the agent reports from now on.'),
    helperMs: z.number().nonnegative().describe('Time spent in the restore helper.'),
  })
  .strict();
export type RestoreResult = z.infer<typeof RestoreResultSchema>;

export const ListenerSchema = z
  .object({
    port: z.number().int().min(1).max(65535),
    address: z.enum(['0.0.0.0', '127.0.0.1', '::', '::1']).describe('Address the socket is bound to.'),
  })
  .strict();
export type Listener = z.infer<typeof ListenerSchema>;
export const ListenerListSchema = z.array(ListenerSchema).max(4096);

export const WriteResultSchema = z.object({ bytes: z.number().int().nonnegative() }).strict();
export const EmptyResultSchema = z.object({}).strict();

/** The result schema of each op, used by the host to validate what the guest returns. */
export const RESULT_SCHEMAS = {
  ping: PongSchema,
  health: HealthSchema,
  'process.list': ProcessListSchema,
  'process.kill': EmptyResultSchema,
  'file.stat': EntryInfoSchema,
  // A bare array is what an agent older than `omitted` sends (one in an existing image or snapshot).
  'file.list': z.union([
    DirListingSchema,
    EntryListSchema.transform((entries): DirListing => ({ entries, omitted: 0 })),
  ]),
  'file.read': EmptyResultSchema,
  'file.write': WriteResultSchema,
  'file.mkdir': EmptyResultSchema,
  'file.remove': EmptyResultSchema,
  'system.sync': EmptyResultSchema,
  'system.configure': EmptyResultSchema,
  'system.quiesce': QuiesceResultSchema,
  'system.restore': RestoreResultSchema,
  exec: ExecExitSchema,
  'exec.attach': ExecExitSchema,
  'exec.forget': EmptyResultSchema,
  'exec.stat': ExecStatSchema,
  'exec.input': WriteResultSchema,
  'port.connect': EmptyResultSchema,
  'net.listeners': ListenerListSchema,
} as const satisfies Record<RequestOp, z.ZodType>;
