import fs from 'node:fs';
import path from 'node:path';
import { SecretStore, type EgressGatewayOptions } from '@agentbox/egress';
import { AgentboxError, ModelPricesSchema, type ModelPrices } from '@agentbox/protocol';
import { createHost, createLogger, isStoreFull, SHUTDOWN_GRACE_MS, type KeyStore } from '@agentbox/host';
import {
  QemuBackend,
  QEMU_BINARY,
  agentEnvFor,
  agentboxHome,
  boxesDir,
  hostTscKhz,
  imagesDir,
  loadImage,
  processStartTime,
  killProcessesMentioning,
  type TemplateProgress,
} from '@agentbox/vm';
import { progressReporter } from '../progress.js';
import { accelVerdict, ensureImage, qemuVersion } from '../runtime.js';

export interface ServeOptions {
  host: string;
  port: number;
  data?: string;
  maxBoxes?: number;
  maxConcurrentTasks?: number;
  /** Most MiB a task's stored events may take (content JSON plus raw lines). */
  maxTaskOutputMib?: number;
  /** Most events a task may store. */
  maxTaskEvents?: number;
  /** No box is made while the data dir's filesystem has less free (GiB; 0: no check). */
  minFreeDiskGib?: number;
  minFreeMemoryMib?: number;
  graceSeconds?: number;
  /** Pause a box nobody uses after this many seconds (0: never). */
  idlePauseSeconds?: number;
  /** Hibernate a box paused this many seconds (0: never). */
  idleHibernateSeconds?: number;
  /** Ended tasks are deleted this many days after they ended (absent: kept). */
  taskRetentionDays?: number;
  /** Deleted boxes (record, history, egress audit) are forgotten this many days after (absent: kept). */
  boxRetentionDays?: number;
  /** A JSON file of model prices (id prefix → USD per million tokens) ahead of the built-in table. */
  modelPrices?: string;
  /** Paused clones kept ready so `create` returns at once. */
  warmPool?: number;
  /** false: no standby clone (each on-demand clone starts its own VM process). */
  standby?: boolean;
  /** false: no templates, every box boots cold. */
  templates?: boolean;
}

/**
 * The gateway's configuration from the environment: secrets from AGENTBOX_SECRET_<NAME> (and the
 * 0600 file AGENTBOX_SECRETS_FILE), held in this process only. AGENTBOX_EGRESS_TEST_UPSTREAMS=1
 * lets policies map names to local addresses and AGENTBOX_EGRESS_TEST_CA (a PEM file) is trusted
 * for upstream TLS: both for tests against fake upstreams, never for production.
 */
export async function egressOptionsFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): Promise<EgressGatewayOptions> {
  const secrets = SecretStore.fromEnv(env);
  if (env.AGENTBOX_SECRETS_FILE) {
    const fromFile = await SecretStore.fromFile(env.AGENTBOX_SECRETS_FILE);
    for (const name of fromFile.names()) secrets.set(name, fromFile.reveal(name)!);
  }
  const testUpstreams = env.AGENTBOX_EGRESS_TEST_UPSTREAMS === '1';
  return {
    secrets,
    allowUpstreamMap: testUpstreams,
    ...(testUpstreams && env.AGENTBOX_EGRESS_TEST_CA
      ? { upstreamCaPem: fs.readFileSync(env.AGENTBOX_EGRESS_TEST_CA, 'utf8') }
      : {}),
  };
}

/**
 * The operator's model prices from `serve --model-prices FILE`: `{"claude-opus-5": {"input": 5,
 * "output": 25}, …}`. A file that cannot be read or is not that shape stops `serve` with a line
 * naming the file and the entry.
 */
export function readModelPrices(file: string): ModelPrices {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AgentboxError(
      'invalid_request',
      `--model-prices ${file}: ${code === 'ENOENT' ? 'no such file' : 'cannot be read'}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new AgentboxError('invalid_request', `--model-prices ${file}: not JSON`);
  }
  const parsed = ModelPricesSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AgentboxError(
      'invalid_request',
      `--model-prices ${file}: ${issue?.path.map(String).join('.') || '(the file)'}: ${issue?.message ?? 'invalid'}` +
        ' (expected {"<model id prefix>": {"input": USD, "output": USD}} per million tokens)',
    );
  }
  return parsed.data;
}

/**
 * Tests only: AGENTBOX_EGRESS_TEST_UPSTREAM_MAP (JSON, host → IP:PORT) is added to every box's
 * policy, so boxes the daemon makes for users and tasks reach fake upstreams. Needs
 * AGENTBOX_EGRESS_TEST_UPSTREAMS=1, like per-box maps.
 */
export function testUpstreamMap(env: NodeJS.ProcessEnv = process.env): {
  egressTestUpstreams?: Record<string, string>;
} {
  const raw = env.AGENTBOX_EGRESS_TEST_UPSTREAM_MAP;
  if (!raw || env.AGENTBOX_EGRESS_TEST_UPSTREAMS !== '1') return {};
  const parsed: unknown = JSON.parse(raw);
  if (!parsed || typeof parsed !== 'object' || !Object.values(parsed).every((v) => typeof v === 'string')) {
    throw new AgentboxError(
      'invalid_request',
      'AGENTBOX_EGRESS_TEST_UPSTREAM_MAP must be a JSON object of strings',
    );
  }
  return { egressTestUpstreams: parsed as Record<string, string> };
}

/** Template builds on the daemon's console: a bar in a TTY, plain lines otherwise (stderr). */
function templateProgress(): TemplateProgress {
  const progress = progressReporter();
  return ({ index, total, message }) => {
    if (index === total) progress.done(message);
    else progress.update(index, total, message);
  };
}

/** The data dir: the daemon's SQLite store and its boxes' runtime dirs. Default $AGENTBOX_HOME. */
export function dataDirOf(data: string | undefined): string {
  return path.resolve(data ?? agentboxHome());
}

/** A path as one shell word: bare when that is safe, else single-quoted. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * The first start's admin key: made and printed only when the store has never had a key. When keys
 * exist but every one is revoked (an operator shut everyone out, say in an incident), none is made,
 * since a new one printed to a log would open the daemon again; one line says how to make one.
 * `dataDir` is the `--data` the daemon was given, if any, for that command. Returns the secret made.
 */
export function firstStartKey(
  keys: Pick<KeyStore, 'total' | 'activeCount' | 'create'>,
  out: { write(text: string): unknown },
  dataDir?: string,
): string | undefined {
  if (keys.total() === 0) {
    const { secret, key } = keys.create({ name: 'initial admin key', scope: 'admin' });
    out.write(
      `agentbox: no API key existed, so an admin key was made (${key.id}); it is shown only this once:\n${secret}\n`,
    );
    return secret;
  }
  if (keys.activeCount() === 0) {
    const data = dataDir === undefined ? '' : ` --data ${shellWord(dataDir)}`;
    out.write(
      `agentbox: every API key is revoked, so every request is refused; make one with \`agentbox keys create --scope admin${data}\`\n`,
    );
  }
  return undefined;
}

/**
 * `agentbox serve`: the daemon. Re-adopts the boxes of an earlier daemon, serves the HTTP API until
 * SIGTERM/SIGINT, then shuts down gracefully; VMs keep running (own process group) for the next one.
 */
export async function serve(
  options: ServeOptions,
  out: NodeJS.WriteStream = process.stdout,
): Promise<number> {
  const home = agentboxHome();
  const dataDir = dataDirOf(options.data);
  // A bad prices file stops serve before anything is booted.
  const modelPrices = options.modelPrices === undefined ? undefined : readModelPrices(options.modelPrices);
  if ((await qemuVersion()) === undefined) {
    throw new AgentboxError(
      'prerequisite_missing',
      `${QEMU_BINARY} is not installed; run \`agentbox setup\``,
    );
  }
  const { image } = await ensureImage({ home, quiet: true });
  const accel = await accelVerdict(home, image);
  const logger = createLogger();
  const backend = new QemuBackend({
    home: dataDir,
    accel: accel.accel,
    tscKhz: accel.accel === 'tcg' ? hostTscKhz() : undefined,
    detached: true,
    // Templates derive from images, which are shared by every data dir of this home.
    templatesDir: path.join(home, 'templates'),
    // A guest flooding its channel: once per box and bound, in the daemon's log.
    guest: {
      onLimit: (notice) => logger.warn({ boxId: notice.vmId, limit: notice.limit }, notice.message),
    },
  });
  const host = createHost({
    dataDir,
    backend,
    image,
    boxDir: (id) => path.join(boxesDir(dataDir), id),
    probe: { startTime: processStartTime, killMentioning: killProcessesMentioning },
    logger,
    // Tests set this to have every JSON response checked against its schema.
    validateResponses: process.env.AGENTBOX_VALIDATE_RESPONSES === '1',
    ...(options.maxBoxes ? { maxBoxes: options.maxBoxes } : {}),
    ...(options.minFreeDiskGib !== undefined ? { minFreeDiskBytes: options.minFreeDiskGib * 1024 ** 3 } : {}),
    ...(options.minFreeMemoryMib !== undefined
      ? { minFreeMemoryBytes: options.minFreeMemoryMib * 1024 ** 2 }
      : {}),
    ...(options.maxConcurrentTasks ? { maxConcurrentTasks: options.maxConcurrentTasks } : {}),
    taskOutputLimits: {
      ...(options.maxTaskOutputMib ? { maxBytes: options.maxTaskOutputMib * 1024 * 1024 } : {}),
      ...(options.maxTaskEvents ? { maxEvents: options.maxTaskEvents } : {}),
    },
    ...(options.taskRetentionDays ? { taskRetentionMs: options.taskRetentionDays * 86_400_000 } : {}),
    ...(options.boxRetentionDays ? { boxRetentionMs: options.boxRetentionDays * 86_400_000 } : {}),
    libraryDir: path.join(dataDir, 'library'),
    agentEnv: agentEnvFor(accel.accel),
    ...(options.templates === false
      ? {}
      : {
          templates: {
            backend,
            warmPool: options.warmPool ?? 0,
            standby: options.standby ?? true,
            onProgress: templateProgress(),
          },
        }),
    images: (id) => {
      try {
        return loadImage(path.join(imagesDir(home), id));
      } catch {
        return undefined;
      }
    },
    idle: {
      ...(options.idlePauseSeconds !== undefined ? { pauseAfterMs: options.idlePauseSeconds * 1000 } : {}),
      ...(options.idleHibernateSeconds !== undefined
        ? { hibernateAfterMs: options.idleHibernateSeconds * 1000 }
        : {}),
    },
    ...testUpstreamMap(),
    egress: {
      ...(await egressOptionsFromEnv()),
      ...(modelPrices ? { modelPrices } : {}),
    },
  });
  firstStartKey(host.keys, out, options.data === undefined ? undefined : dataDir);
  // A promise nobody handled (a bug on a path a guest drove) is logged, not the end of every box's
  // session and stream: Node would exit the daemon.
  process.on('unhandledRejection', (reason) => {
    logger.error({ err: reason instanceof Error ? reason.message : String(reason) }, 'unhandled rejection');
  });
  // Listening while the boxes are re-adopted: a guest slow to answer holds back its own box only.
  // Hibernated boxes are not re-adopted (they wake on their next use).
  const leftBoxes = host.store.live().filter((box) => box.state !== 'hibernated').length;
  const starting = host.start();
  starting.catch(() => undefined); // awaited below, once listening
  const address = await host.app.listen({ host: options.host, port: options.port });
  if (leftBoxes > 0) out.write(`agentbox: listening on ${address}; re-adopting ${leftBoxes} boxes\n`);
  let reconciled: Awaited<typeof starting>;
  try {
    reconciled = await starting;
  } catch (err) {
    // A daemon that cannot take back what the last one left ends (its boxes are left as they are
    // for the next start) rather than serve half-started; the adopted VMs' sockets would keep it up.
    await host.close(0).catch(() => undefined);
    logger.flush();
    setTimeout(() => process.exit(), 200);
    const full = isStoreFull(err);
    throw new AgentboxError(
      'internal',
      full
        ? `the filesystem of ${dataDir} is full, so the daemon cannot record its boxes: free disk space there and start it again (the boxes were left as they are)`
        : `could not take back the boxes an earlier daemon left: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  out.write(
    `agentbox: serving on ${address} (accel ${accel.accel}; data ${dataDir}; ` +
      `${reconciled.adopted.length} boxes re-adopted, ${reconciled.failed.length} failed, ` +
      `${reconciled.hibernated.length} hibernated)\n`,
  );

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  out.write(`agentbox: ${signal}: finishing requests, boxes keep running for the next daemon\n`);
  // A second signal ends the daemon at once.
  process.once('SIGTERM', () => process.exit(143));
  process.once('SIGINT', () => process.exit(130));
  await host.close((options.graceSeconds ?? SHUTDOWN_GRACE_MS / 1000) * 1000);
  logger.flush();
  // The listening sockets of re-adopted VMs would keep the event loop alive; the VMs themselves live on.
  process.exit(0);
}
