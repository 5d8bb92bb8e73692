import { Command, CommanderError, Help, InvalidArgumentError, Option } from 'commander';
import type { KeyGrants } from '@agentbox/host';
import { AgentboxError, isAgentboxError, RUNTIMES } from '@agentbox/protocol';
import { AGENT_CLI_NAMES, DEFAULT_RESOURCES, parseAgentClis, type AgentCli } from '@agentbox/vm';
import { doctor, formatDoctor } from './commands/doctor.js';
import { imageBuild, imagePrune, imageShow } from './commands/image.js';
import { parseEnvPairs, runCommandInBox } from './commands/run.js';
import { setup } from './commands/setup.js';
import { boxAction } from './commands/lifecycle.js';
import {
  boxCommandList,
  boxCommandOutput,
  boxCommandRemove,
  boxCommandStdin,
  boxCopy,
  boxCreate,
  boxExec,
  boxList,
  boxRemove,
} from './commands/box.js';
import { taskCancel, taskEvents, taskList, taskRemove, taskRun, taskShow } from './commands/task.js';
import { agentboxHome } from '@agentbox/vm';
import {
  intOption,
  PROJECT_RESOURCES,
  RESOURCE_LIMITS,
  resourceOptions,
  resourcesOf,
  type ResourceFlags,
} from './options.js';
import { writeJson } from './output.js';
import { parseRepo } from './project/github-repo.js';

/**
 * Commands that load the daemon, its store or the web stack are imported when run: every
 * `agentbox` start would otherwise pay ~0.4 s of module loading for them (`run` is one of many).
 */
const commands = {
  bench: () => import('./commands/bench.js'),
  keys: () => import('./commands/keys.js'),
  audit: () => import('./commands/audit.js'),
  serve: () => import('./commands/serve.js'),
  library: () => import('./commands/library.js'),
  project: () => import('./commands/project.js'),
};

/** Exit status for agentbox's own failures (as docker does), distinct from the command's codes. */
export const EXIT_AGENTBOX_ERROR = 125;
export const EXIT_USAGE = 2;

function numberOption(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${name} must be a number ≥ ${min}`);
    return n;
  };
}

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

/** A key's limit: a whole number, or `none` for no limit of its own (commander keeps no null). */
function limitOption(name: string) {
  const whole = intOption(name, 0, 1_000_000);
  return (value: string): number | 'none' => (value === 'none' ? 'none' : whole(value));
}

interface Limits {
  maxBoxes?: number | 'none';
  maxTasks?: number | 'none';
  maxMemory?: number | 'none';
  maxDisk?: number | 'none';
  maxSpend?: number | 'none';
}

/** A key's spend cap in dollars, or `none`. */
function spendCapOption(value: string): number | 'none' {
  return value === 'none' ? 'none' : numberOption('--max-spend', 0)(value);
}

const limitOf = (value: number | 'none'): number | null => (value === 'none' ? null : value);

/** The grants `--repo`/`--no-repos` and the limits ask for; fields not given are left out. */
function grantFlags(opts: { repo?: string[]; repos?: boolean } & Limits): Partial<KeyGrants> {
  if (opts.repos === false && opts.repo)
    throw new AgentboxError('invalid_request', '--repo and --no-repos cannot go together');
  return {
    ...(opts.repos === false ? { repos: [] } : opts.repo ? { repos: opts.repo } : {}),
    ...(opts.maxBoxes !== undefined ? { maxBoxes: limitOf(opts.maxBoxes) } : {}),
    ...(opts.maxTasks !== undefined ? { maxTasks: limitOf(opts.maxTasks) } : {}),
    ...(opts.maxMemory !== undefined ? { maxMemoryMib: limitOf(opts.maxMemory) } : {}),
    ...(opts.maxDisk !== undefined ? { maxDiskGib: limitOf(opts.maxDisk) } : {}),
    ...(opts.maxSpend !== undefined ? { maxSpendUsd: limitOf(opts.maxSpend) } : {}),
  };
}

/** A parser of a flag's value whose own errors become commander's usage errors (exit 2). */
function flagArg<T>(parse: (value: string) => T) {
  return (value: string): T => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError(isAgentboxError(err) ? err.message : String(err));
    }
  };
}

const agentsArg = flagArg(parseAgentClis);
const repoArg = flagArg(parseRepo);

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('agentbox')
    .description('Self-hosted microVM sandboxes for AI coding agents')
    .version('0.1.0')
    .showHelpAfterError(false)
    .configureHelp({
      // A flag that is off, or a list that is empty, needs no "(default: false)" / "(default: [])".
      optionDescription(this: Help, option: Option): string {
        const value: unknown = option.defaultValue;
        const trivial = value === false || (Array.isArray(value) && value.length === 0);
        return trivial ? option.description : Help.prototype.optionDescription.call(this, option);
      },
    })
    .exitOverride()
    .configureOutput({
      writeErr: (text) => process.stderr.write(text),
      outputError: (text, write) => write(`agentbox: ${text.replace(/^error: /, '').trim()}\n`),
    });

  const run = program
    .command('run')
    .description(
      "start a fresh box (a clone of the image's template if one is built), run one command in it, destroy the box; exits with the command's status",
    );
  for (const option of resourceOptions(DEFAULT_RESOURCES)) run.addOption(option);
  run
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable)', collect, [])
    .option('-w, --workdir <DIR>', 'working directory in the box (default /root)')
    .addOption(
      new Option('--timeout <S>', 'kill the command after S seconds (exit 124)').argParser(
        numberOption('--timeout', 0.001),
      ),
    )
    .option('-i, --stdin', "pass this process's stdin to the command", false)
    .option('--cold', 'boot the image even when its template is built (default: clone the template)', false)
    .argument('<command...>', 'command and arguments (put them after --)')
    .action(
      async (
        argv: string[],
        opts: ResourceFlags & {
          env: string[];
          workdir?: string;
          timeout?: number;
          stdin: boolean;
          cold: boolean;
        },
      ) => {
        if (opts.workdir !== undefined && !opts.workdir.startsWith('/')) {
          throw new AgentboxError('invalid_request', '--workdir must be an absolute path in the box');
        }
        setExit(
          await runCommandInBox({
            argv,
            resources: resourcesOf(opts),
            env: parseEnvPairs(opts.env),
            ...(opts.workdir ? { workdir: opts.workdir } : {}),
            ...(opts.timeout ? { timeoutSeconds: opts.timeout } : {}),
            stdin: opts.stdin,
            cold: opts.cold,
          }),
        );
      },
    );

  program
    .command('setup')
    .description('install the Debian packages agentbox needs (only those missing)')
    .option('--check', 'only report what is missing', false)
    .action(async (opts: { check: boolean }) => setExit(await setup(opts)));

  program
    .command('doctor')
    .description('check the host: QEMU, accelerator, image, memory and disk, with the fix for each problem')
    .option('--json', 'print JSON', false)
    .action(async (opts: { json: boolean }) => {
      const report = await doctor();
      if (opts.json) writeJson(report);
      else process.stdout.write(`${formatDoctor(report)}\n`);
      setExit(report.ok ? 0 : 1);
    });

  const image = program.command('image').description('build and inspect the box image');
  const agentsOption = () =>
    new Option(
      '--agents <LIST>',
      `agent CLIs in the image, comma-separated: ${AGENT_CLI_NAMES.join(', ')} (default $AGENTBOX_AGENTS, else claude)`,
    ).argParser(agentsArg);
  image
    .command('build')
    .description('build the image from Debian and npm packages (returns at once when it is up to date)')
    .addOption(agentsOption())
    .option('--force', 'rebuild even if an identical image exists', false)
    .option('--json', 'print the manifest as JSON', false)
    .action(async (opts: { force: boolean; json: boolean; agents?: AgentCli[] }) =>
      setExit(await imageBuild(opts)),
    );
  image
    .command('show')
    .description('show the image with these agents (the one `run` and `serve` use)')
    .addOption(agentsOption())
    .option('--json', 'print the manifest as JSON', false)
    .action((opts: { json: boolean; agents?: AgentCli[] }) => setExit(imageShow(opts)));
  image
    .command('prune')
    .description(
      'remove images nothing uses (not the newest with their agents, no box disk on them), their templates and stale build caches',
    )
    .option('--dry-run', 'only list what would be removed', false)
    .option('--json', 'print the plan as JSON', false)
    .action(async (opts: { dryRun: boolean; json: boolean }) => setExit(await imagePrune(opts)));

  program
    .command('bench')
    .description(
      'measure boot, clone, pause/hibernate, round trip, exec, throughput and idle density figures',
    )
    .option('--json', 'print one JSON object', false)
    .option('--no-snapshots', 'skip the clone, pause, hibernate and idle-density figures')
    .action(async (opts: { json: boolean; snapshots: boolean }) => {
      const { bench, formatBench } = await commands.bench();
      const result = await bench((line) => process.stderr.write(`${line}\n`), { snapshots: opts.snapshots });
      if (opts.json) writeJson(result);
      else process.stdout.write(`${formatBench(result)}\n`);
      setExit(0);
    });

  program
    .command('serve')
    .description('run the daemon: HTTP API (seed-compatible + /v1), API keys, box lifecycle, reaper')
    .option('--host <ADDR>', 'address to listen on', '127.0.0.1')
    .addOption(
      new Option('--port <N>', 'port (0: any free one)')
        .argParser(intOption('--port', 0, 65535))
        .default(8080),
    )
    .option('--data <DIR>', 'state dir: SQLite store and box runtime dirs (default $AGENTBOX_HOME)')
    .addOption(
      new Option('--max-boxes <N>', 'most live boxes on this host')
        .argParser(intOption('--max-boxes', 1, 1024))
        // The host's DEFAULT_MAX_BOXES (the CLI loads the host package only for `serve`).
        .default(8),
    )
    .addOption(
      new Option('--max-concurrent-tasks <N>', 'tasks running at once; the rest wait in FIFO order')
        .argParser(intOption('--max-concurrent-tasks', 1, 256))
        .default(5),
    )
    .addOption(
      new Option(
        '--max-task-output-mib <MiB>',
        "most a task's stored events may take; past it the agent is stopped and the task fails output_limit",
      )
        .argParser(intOption('--max-task-output-mib', 1, 64 * 1024))
        // The host's DEFAULT_TASK_OUTPUT_LIMITS.
        .default(256),
    )
    .addOption(
      new Option(
        '--max-task-events <N>',
        'most events a task may store; past it the agent is stopped and the task fails output_limit',
      )
        .argParser(intOption('--max-task-events', 100, 100_000_000))
        .default(100_000),
    )
    .addOption(
      new Option(
        '--min-free-disk-gib <GiB>',
        "make no box while the data dir's filesystem has less free (0: no check)",
      )
        .argParser(intOption('--min-free-disk-gib', 0, 1_000_000))
        // The host's DEFAULT_MIN_FREE_DISK_BYTES.
        .default(2),
    )
    .addOption(
      new Option(
        '--min-free-memory-mib <MiB>',
        'make no box, and hibernate idle ones, while the host has less memory available (0: no check)',
      )
        .argParser(intOption('--min-free-memory-mib', 0, 100_000_000))
        // The host's DEFAULT_MIN_FREE_MEMORY_BYTES.
        .default(1024),
    )
    .addOption(
      new Option('--idle-pause-seconds <S>', 'pause a box nobody uses after S seconds (0: never)')
        .argParser(intOption('--idle-pause-seconds', 0, 86_400))
        .default(30),
    )
    .addOption(
      new Option('--idle-hibernate-seconds <S>', 'hibernate a box paused for S seconds (0: never)')
        .argParser(intOption('--idle-hibernate-seconds', 0, 30 * 86_400))
        .default(600),
    )
    .addOption(
      new Option(
        '--task-retention-days <D>',
        'delete ended tasks and their events D days after they ended (default: keep them)',
      ).argParser(intOption('--task-retention-days', 1, 36_500)),
    )
    .addOption(
      new Option(
        '--box-retention-days <D>',
        'forget deleted boxes (their record, state history and egress audit) D days after they were deleted (default: keep them)',
      ).argParser(intOption('--box-retention-days', 1, 36_500)),
    )
    .option(
      '--model-prices <FILE>',
      'JSON of model prices the host counts spend with, ahead of its own table: {"<model id prefix>": {"input": USD, "output": USD}} per million tokens',
    )
    .addOption(
      new Option('--warm-pool <N>', 'paused clones kept ready so a create returns at once')
        .argParser(intOption('--warm-pool', 0, 64))
        .default(0),
    )
    .option('--no-templates', 'no template snapshots: every box boots cold')
    .option(
      '--no-standby',
      'no clone kept loaded ahead (a create then starts its VM process and loads the snapshot itself, ~35 ms more)',
    )
    .action(
      async (opts: {
        host: string;
        port: number;
        data?: string;
        maxBoxes?: number;
        maxConcurrentTasks?: number;
        maxTaskOutputMib?: number;
        maxTaskEvents?: number;
        minFreeDiskGib?: number;
        minFreeMemoryMib?: number;
        idlePauseSeconds: number;
        idleHibernateSeconds: number;
        taskRetentionDays?: number;
        boxRetentionDays?: number;
        modelPrices?: string;
        warmPool: number;
        templates: boolean;
        standby: boolean;
      }) => setExit(await (await commands.serve()).serve(opts)),
    );

  const keys = program.command('keys').description('manage API keys (stored hashed; a key is shown once)');
  const grantOptions = (command: Command, verb: string): Command =>
    command
      .option(
        '--repo <OWNER/NAME>',
        `${verb} a GitHub repository the host's token may serve this key's boxes: owner/name, owner/* or * (repeatable)`,
        collect,
      )
      .addOption(
        new Option(
          '--max-boxes <N>',
          'most live boxes the key holds at once (none: only the host limit)',
        ).argParser(limitOption('--max-boxes')),
      )
      .addOption(
        new Option(
          '--max-tasks <N>',
          'most tasks the key has queued or running at once (none: only the host queue)',
        ).argParser(limitOption('--max-tasks')),
      )
      .addOption(
        new Option(
          '--max-memory <MiB>',
          "guest memory of all the key's live boxes together (none: no cap)",
        ).argParser(limitOption('--max-memory')),
      )
      .addOption(
        new Option(
          '--max-disk <GiB>',
          "disk size of all the key's live boxes together: what they may fill on the host (none: no cap)",
        ).argParser(limitOption('--max-disk')),
      )
      .addOption(
        new Option(
          '--max-spend <USD>',
          "most the key's boxes may spend on model calls in all, by the host's count (none: no cap)",
        ).argParser(spendCapOption),
      );
  grantOptions(
    keys
      .command('create')
      .description('make a key and print it once')
      .option('--name <NAME>', 'what the key is for', 'api key')
      .option('--scope <SCOPE>', 'admin (all boxes) or user (only the boxes it created)', 'user'),
    'grant',
  )
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .option('--json', 'print JSON', false)
    .action(
      async (opts: { name: string; scope: string; data?: string; json: boolean; repo?: string[] } & Limits) =>
        setExit(
          (await commands.keys()).keysCreate({
            name: opts.name,
            scope: opts.scope,
            data: opts.data,
            json: opts.json,
            grants: grantFlags(opts),
          }),
        ),
    );
  grantOptions(
    keys
      .command('update')
      .description("change a key's grants (a running daemon applies them from the key's next request)")
      .argument('<id>', 'key id, as `keys list` shows it'),
    'set (replaces the list)',
  )
    .option('--no-repos', 'take back every repository grant')
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .option('--json', 'print the key as JSON', false)
    .action(
      async (id: string, opts: { data?: string; json: boolean; repo?: string[]; repos?: boolean } & Limits) =>
        setExit(
          (await commands.keys()).keysUpdate({
            id,
            data: opts.data,
            json: opts.json,
            grants: grantFlags(opts),
          }),
        ),
    );
  keys
    .command('list')
    .description('list keys (never their secrets)')
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .option('--json', 'print {"keys": [...]}', false)
    .action(async (opts: { data?: string; json: boolean }) =>
      setExit((await commands.keys()).keysList(opts)),
    );
  keys
    .command('revoke')
    .description(
      'revoke a key by id: new requests get 401 at once, its open streams end and its tasks fail within ~5 s',
    )
    .argument('<id>', 'key id, as `keys list` shows it')
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .action(async (id: string, opts: { data?: string }) =>
      setExit((await commands.keys()).keysRevoke({ id, ...opts })),
    );
  keys
    .command('reset-spend')
    .description(
      "start a key's spend count again (a new billing period): its --max-spend holds against what its boxes spend from now",
    )
    .argument('<id>', 'key id, as `keys list` shows it')
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .option('--json', 'print the key as JSON', false)
    .action(async (id: string, opts: { data?: string; json: boolean }) =>
      setExit((await commands.keys()).keysResetSpend({ id, ...opts })),
    );

  program
    .command('audit')
    .description("a box's egress decisions (allowed and denied connections), oldest first")
    .argument('<box>', 'box id')
    .option('--data <DIR>', 'state dir of the daemon (default $AGENTBOX_HOME)')
    .option('--json', 'print {"records": [...], "next": SEQ|null}, as GET /v1/boxes/{id}/egress', false)
    .addOption(
      new Option('--after <SEQ>', 'only records after this sequence number').argParser(
        intOption('--after', 0, 2 ** 31),
      ),
    )
    .addOption(
      new Option('--limit <N>', 'at most this many records').argParser(intOption('--limit', 1, 1000)),
    )
    .action(async (box: string, opts: { data?: string; json: boolean; after?: number; limit?: number }) =>
      setExit((await commands.audit()).audit({ box, ...opts })),
    );

  const daemonOptions = (cmd: Command) =>
    cmd
      .option('--url <URL>', 'daemon URL (default $AGENTBOX_URL or http://127.0.0.1:8080)')
      .option('--key <KEY>', 'API key (default $AGENTBOX_API_KEY)');
  const task = program.command('task').description('run agent tasks on the daemon and follow their events');
  daemonOptions(
    task
      .command('run')
      .description(
        'queue a task (Claude Code, Codex, OpenCode or a shell script) and, with --follow, stream it',
      )
      .option('--agent <AGENT>', 'claude, codex, opencode or shell', 'claude')
      .option('-p, --prompt <TEXT>', 'the prompt (for shell: the script)')
      .option('--prompt-file <PATH>', 'read the prompt from a file')
      .option('--repo <URL>', 'https git URL cloned into the workspace first')
      .option('--model <MODEL>', 'model name')
      .option('--effort <EFFORT>', 'low, medium, high, xhigh or max (default low)')
      .option('--box <ID>', 'run in this box (default: a fresh box, deleted after)')
      .option('--user <ID>', "run in this user's persistent box")
      .addOption(
        new Option('--timeout <SECONDS>', 'kill the agent after this long (default 300)').argParser(
          intOption('--timeout', 1, 86_400),
        ),
      )
      .option('--file <NAME=PATH>', 'write a host file into the workspace first (repeatable)', collect, [])
      .option('-e, --env <KEY=VALUE>', 'environment variable for the agent (repeatable)', collect, [])
      .option('--allowed-tools <LIST>', 'comma-separated tools the agent may use (claude, opencode)')
      .option('--disallowed-tools <LIST>', 'comma-separated tools the agent may not use (claude, opencode)')
      .option('--project <NAME>', 'library namespace resolved over _global')
      .option('--agent-ref <NAME>', 'run as this library agent definition')
      .option('--resume <SESSION>', 'continue this agent session')
      .addOption(
        new Option(
          '--max-spend <USD>',
          "stop the task once its model calls cost this much, by the host's count",
        ).argParser(numberOption('--max-spend', 0.01)),
      )
      .option('-f, --follow', 'print events live until the task ends (exit 0 only if it succeeded)', false)
      .option('--json', 'NDJSON events (or the task as JSON without --follow)', false),
  ).action(async (opts: Parameters<typeof taskRun>[0]) => setExit(await taskRun(opts)));
  daemonOptions(
    task
      .command('events')
      .description("print a task's events (from --after) until it ends")
      .argument('<id>', 'task id')
      .addOption(
        new Option('--after <SEQ>', 'only events after this seq').argParser(intOption('--after', 0, 2 ** 31)),
      )
      .option('--json', 'NDJSON events', false),
  ).action(async (id: string, opts: Parameters<typeof taskEvents>[1]) => setExit(await taskEvents(id, opts)));
  daemonOptions(task.command('show').description('one task as JSON').argument('<id>', 'task id')).action(
    async (id: string, opts: { url?: string; key?: string }) => setExit(await taskShow(id, opts)),
  );
  daemonOptions(
    task.command('cancel').description('cancel a queued or running task').argument('<id>', 'task id'),
  ).action(async (id: string, opts: { url?: string; key?: string }) => setExit(await taskCancel(id, opts)));
  daemonOptions(
    task.command('rm').description('delete ended tasks and their events').argument('<id...>', 'task ids'),
  ).action(async (ids: string[], opts: { url?: string; key?: string }) =>
    setExit(await taskRemove(ids, opts)),
  );
  daemonOptions(
    task
      .command('list')
      .description('recent tasks, newest first: a page of them, or every page with --all')
      .option('--box <ID>', "only this box's tasks")
      .addOption(
        new Option('--limit <N>', 'tasks per page (default 100)').argParser(intOption('--limit', 1, 1000)),
      )
      .option('--cursor <CURSOR>', 'the page after this one (the cursor a previous list printed)')
      .option('--all', 'every page', false)
      .option('--json', 'NDJSON', false),
  ).action(async (opts: Parameters<typeof taskList>[0]) => setExit(await taskList(opts)));

  const box = program
    .command('box')
    .description('boxes on the daemon: list, create, run a command in one, copy files, delete');
  daemonOptions(
    box
      .command('ls')
      .description('the boxes this key may see')
      .option('--json', 'print {"boxes": [...]}', false),
  ).action(async (opts: Parameters<typeof boxList>[0]) => setExit(await boxList(opts)));
  const limit = (flag: string, field: keyof typeof RESOURCE_LIMITS) =>
    intOption(flag, RESOURCE_LIMITS[field].min, RESOURCE_LIMITS[field].max);
  daemonOptions(
    box
      .command('create')
      .description("boot a box on the daemon and print its id (flags left out: the daemon's defaults)")
      .addOption(new Option('--runtime <RUNTIME>', 'image profile').choices(RUNTIMES))
      .addOption(new Option('--memory <MiB>', 'guest memory').argParser(limit('--memory', 'memoryMib')))
      .addOption(new Option('--cpus <N>', 'virtual CPUs').argParser(limit('--cpus', 'vcpus')))
      .addOption(new Option('--disk <GiB>', 'disk size').argParser(limit('--disk', 'diskGib')))
      .option('--user <ID>', "a user's persistent box (at most one live per user id)")
      .addOption(
        new Option('--ttl <S>', 'delete the box this many seconds after it was made').argParser(
          intOption('--ttl', 1, 30 * 24 * 3600),
        ),
      )
      .option('--label <KEY=VALUE>', 'a label (repeatable)', collect, [])
      .option('--json', 'print the box as JSON', false),
  ).action(async (opts: Parameters<typeof boxCreate>[0]) => setExit(await boxCreate(opts)));
  daemonOptions(
    box
      .command('exec')
      .description("run a program in a box (no shell: `-- sh -c '...'` for one); exits with its status")
      .argument('<box>', 'box id')
      .argument('<command...>', 'command and arguments (put them after --)')
      .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
      .option('-w, --workdir <DIR>', 'working directory in the box (default /workspace)')
      .addOption(
        new Option('--timeout <S>', 'kill the command after S seconds (exit 124)').argParser(
          numberOption('--timeout', 0.001),
        ),
      )
      .option('-i, --stdin', "pass this process's stdin to the command", false)
      .option(
        '-b, --background',
        'start it as a background command that runs on past this call; print its id (see `box command`)',
        false,
      )
      .addOption(
        new Option(
          '--keep-output <MiB>',
          'with --background: keep its last MiB of each stream (default 32)',
        ).argParser(intOption('--keep-output', 1, 4096)),
      )
      .option(
        '--stdin-open',
        'with --background: keep its stdin open, to write to with `box command stdin`',
        false,
      ),
  ).action(async (id: string, argv: string[], opts: Parameters<typeof boxExec>[2]) =>
    setExit(await boxExec(id, argv, opts)),
  );
  const command = box
    .command('command')
    .description('background commands in a box (`box exec --background`): list, read output, end');
  daemonOptions(
    command
      .command('ls')
      .description("a box's background commands, oldest first")
      .argument('<box>', 'box id')
      .option('--json', 'print {"commands": [...]}', false),
  ).action(async (id: string, opts: Parameters<typeof boxCommandList>[1]) =>
    setExit(await boxCommandList(id, opts)),
  );
  daemonOptions(
    command
      .command('output')
      .description('what a background command printed; --follow: as it comes, exiting with its status')
      .argument('<box>', 'box id')
      .argument('<command>', 'command id (cmd-...)')
      .option('-f, --follow', 'follow until the command ends', false),
  ).action(async (id: string, commandId: string, opts: Parameters<typeof boxCommandOutput>[2]) =>
    setExit(await boxCommandOutput(id, commandId, opts)),
  );
  daemonOptions(
    command
      .command('stdin')
      .description(
        "send this process's stdin to a background command started with --stdin-open, then close it",
      )
      .argument('<box>', 'box id')
      .argument('<command>', 'command id (cmd-...)')
      .option('--keep-open', "leave the command's stdin open afterwards", false),
  ).action(async (id: string, commandId: string, opts: Parameters<typeof boxCommandStdin>[2]) =>
    setExit(await boxCommandStdin(id, commandId, opts)),
  );
  daemonOptions(
    command
      .command('rm')
      .description('end background commands if they still run, and drop them and their output')
      .argument('<box>', 'box id')
      .argument('<command...>', 'command ids'),
  ).action(async (id: string, ids: string[], opts: { url?: string; key?: string }) =>
    setExit(await boxCommandRemove(id, ids, opts)),
  );
  daemonOptions(
    box
      .command('cp')
      .description('copy a file into a box or out of one: BOX:PATH for the box side, - for stdin or stdout')
      .argument('<src>', 'BOX:PATH, a local file, or -')
      .argument('<dst>', 'BOX:PATH, a local file, or -'),
  ).action(async (src: string, dst: string, opts: { url?: string; key?: string }) =>
    setExit(await boxCopy(src, dst, opts)),
  );
  daemonOptions(box.command('rm').description('delete boxes').argument('<box...>', 'box ids')).action(
    async (ids: string[], opts: { url?: string; key?: string }) => setExit(await boxRemove(ids, opts)),
  );

  const library = program
    .command('library')
    .description('skills, agent definitions, MCP servers, hooks, rules and settings materialized into tasks');
  library
    .command('add')
    .description('store or replace an item from a file (its main file) or a directory (all its files)')
    .argument('<kind>', 'skill, agent, mcp, hooks, rules or settings')
    .argument('<name>', 'item name')
    .argument('<path>', 'file or directory')
    .option('--namespace <NS>', '_global or a project name', '_global')
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .action(async (kind: string, name: string, from: string, opts: { namespace?: string; data?: string }) =>
      setExit(await (await commands.library()).libraryAdd(kind, name, from, opts)),
    );
  library
    .command('list')
    .description('items with their content hashes')
    .option('--kind <KIND>', 'only this kind')
    .option('--namespace <NS>', 'only this namespace')
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .option('--json', 'print {"items": [...]}, as GET /v1/library', false)
    .action(async (opts: { kind?: string; namespace?: string; data?: string; json: boolean }) =>
      setExit((await commands.library()).libraryList(opts)),
    );
  library
    .command('show')
    .description('one item with its files, as JSON')
    .argument('<kind>', 'item kind')
    .argument('<name>', 'item name')
    .option('--namespace <NS>', '_global or a project name', '_global')
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .action(async (kind: string, name: string, opts: { namespace?: string; data?: string }) =>
      setExit((await commands.library()).libraryShow(kind, name, opts)),
    );
  library
    .command('rm')
    .description('remove an item')
    .argument('<kind>', 'item kind')
    .argument('<name>', 'item name')
    .option('--namespace <NS>', '_global or a project name', '_global')
    .option('--data <DIR>', 'state dir (default $AGENTBOX_HOME)')
    .action(async (kind: string, name: string, opts: { namespace?: string; data?: string }) =>
      setExit(await (await commands.library()).libraryRemove(kind, name, opts)),
    );

  registerProjectCommands(program, setExit);
  for (const [action, description] of [
    ['pause', 'pause a box: its vCPUs stop and it uses no CPU; the next request resumes it'],
    ['resume', 'resume a paused box, or wake a hibernated one'],
    ['hibernate', 'hibernate a box: saved to disk, its VM process ends; the next request wakes it'],
  ] as const) {
    program
      .command(action)
      .description(description)
      .argument('<box>', 'box id')
      .option('--url <URL>', 'daemon URL (default $AGENTBOX_URL or http://127.0.0.1:8080)')
      .option('--key <KEY>', 'API key (default $AGENTBOX_API_KEY)')
      .option('--json', 'print the box as JSON', false)
      .action(async (id: string, opts: { url?: string; key?: string; json: boolean }) =>
        setExit(await boxAction(action, id, opts)),
      );
  }

  return program;
}

/**
 * The per-project commands keep sockets of the project's box (which outlives them) and stdin open:
 * once the command is done the process ends instead of waiting for them.
 */
function exitWhenDone(): void {
  setTimeout(() => process.exit(), 200);
}

function registerProjectCommands(program: Command, setExit: (code: number) => void): void {
  const agents = [
    ['claude', 'Claude Code (--dangerously-skip-permissions)'],
    ['codex', 'Codex (--dangerously-bypass-approvals-and-sandbox)'],
    ['opencode', 'OpenCode (every permission allowed)'],
    ['shell', 'bash (`agentbox shell -- -c CMD` runs one command)'],
  ] as const;
  for (const [agent, what] of agents) {
    const command = program
      .command(agent)
      .description(
        `run ${what} in this project's box: booted or reused, the project mounted at its host path`,
      )
      .configureOutput({
        writeErr: (text) => process.stderr.write(text),
        // `agentbox claude --model opus`: the option is the agent's, which goes after --.
        outputError: (text, write) => {
          const line = text.replace(/^error: /, '').trim();
          const unknown = /^unknown option '([^']+)'/.exec(line)?.[1];
          const hint = unknown
            ? ` (${agent}'s own options go after --: agentbox ${agent} -- ${unknown} …)`
            : '';
          write(`agentbox: ${line}${hint}\n`);
        },
      })
      .addHelpText('after', '\nA change of --memory, --cpus, --disk, --image or --mount makes a new box.');
    for (const option of resourceOptions(PROJECT_RESOURCES)) command.addOption(option);
    command
      .option('--image <ID|DIR>', 'image id (as `agentbox image show` prints it) or directory')
      .option(
        '--repo <OWNER/NAME|URL>',
        'GitHub repository the box may reach, OWNER/NAME or https://github.com/OWNER/NAME (repeatable; default: the GitHub remotes of the project)',
        (value: string, previous: string[]) => [...previous, repoArg(value)],
        [],
      )
      .option('--mount <HOST[:GUEST][:ro]>', 'another host directory in the box (repeatable)', collect, [])
      .option(
        '--publish <HOST:GUEST>',
        'publish a box port on host 127.0.0.1 (repeatable; ADDR:HOST:GUEST for another address)',
        collect,
        [],
      )
      .option('--auto-publish', 'publish every port that listens in the box on the same host port', false)
      .option('--allow-egress <IP|CIDR>', 'an address the box may connect to (repeatable)', collect, [])
      .option('--allow-lan', 'allow private (LAN) addresses', false)
      .option('--allow-host', "allow this host's own addresses", false)
      .option('--no-git', 'no GitHub access and no GitHub credential in the box')
      .argument('[args...]', `arguments for ${agent} (put them after --)`)
      .action(
        async (
          args: string[],
          opts: ResourceFlags & {
            image?: string;
            repo: string[];
            mount: string[];
            publish: string[];
            autoPublish: boolean;
            allowEgress: string[];
            allowLan: boolean;
            allowHost: boolean;
            git: boolean;
          },
        ) => {
          try {
            setExit(
              await (
                await commands.project()
              ).runProjectCommand({ agent, args, cwd: process.cwd(), ...opts }),
            );
          } finally {
            exitWhenDone();
          }
        },
      );
  }
  const project = program
    .command('project')
    .description('the per-project boxes of `agentbox claude|codex|opencode|shell`');
  project
    .command('ls')
    .description('project boxes: id, running or not, project directory')
    .option('--json', 'print {"boxes": [...]}', false)
    .action(async (opts: { json: boolean }) =>
      setExit((await commands.project()).projectList({ json: opts.json, home: agentboxHome() })),
    );
  project
    .command('rm')
    .description("stop a project's box and delete its disk")
    .argument('[dir|id]', 'project directory, or a box id from `project ls` (default: the current directory)')
    .action(async (dir: string | undefined) =>
      setExit(
        await (await commands.project()).projectRemove({ dir: dir ?? process.cwd(), home: agentboxHome() }),
      ),
    );
}

/** Runs the CLI; returns the process exit status. Errors become one line on stderr, never a stack. */
export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = buildProgram((code) => (exitCode = code));
  const started = performance.now();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version exit 0; usage errors were already printed as one line
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (isAgentboxError(err)) {
      process.stderr.write(`agentbox: ${err.message}\n`);
      if (process.env.AGENTBOX_DEBUG === '1' && err.cause instanceof Error)
        process.stderr.write(`${err.cause.stack}\n`);
      return err.code === 'invalid_request' ? EXIT_USAGE : EXIT_AGENTBOX_ERROR;
    }
    const e = err as Error;
    process.stderr.write(`agentbox: internal error: ${e.message}\n`);
    if (process.env.AGENTBOX_DEBUG === '1') process.stderr.write(`${e.stack}\n`);
    return EXIT_AGENTBOX_ERROR;
  } finally {
    if (process.env.AGENTBOX_PROFILE === '1') process.stderr.write(profileLine(argv, started));
  }
}

/**
 * AGENTBOX_PROFILE=1: every command ends with its name, the time node took to load the CLI and the
 * command's own time (commands that boot boxes print their phases on a line of their own before it).
 */
export function profileLine(
  argv: readonly string[],
  commandStarted: number,
  now = performance.now(),
): string {
  const groups = ['image', 'keys', 'task', 'library', 'project'];
  const [first, second] = argv;
  const name =
    first && groups.includes(first) && second && !second.startsWith('-')
      ? `${first} ${second}`
      : (first ?? '');
  return `agentbox profile: command=${JSON.stringify(name)} startup=${commandStarted.toFixed(0)}ms command=${(now - commandStarted).toFixed(0)}ms total=${now.toFixed(0)}ms\n`;
}

export { AgentboxError };
