import fs from 'node:fs';
import path from 'node:path';
import { compilePolicy } from '@agentbox/egress';
import { AgentboxError } from '@agentbox/protocol';
import {
  QemuBackend,
  agentEnvFor,
  agentClisFromEnv,
  boxesDir,
  hostTscKhz,
  imagesDir,
  loadImage,
  type AgentCli,
  type Image,
  type Vm,
} from '@agentbox/vm';
import { resourcesOf, type ResourceFlags } from '../options.js';
import { writeJson, writeTo } from '../output.js';
import { PhaseTimer } from '../profile.js';
import { openRuntime } from '../runtime.js';
import { shellExitStatus } from './run.js';
import {
  listProjectBoxes,
  lockProjectBox,
  mountScript,
  openProjectBox,
  parseMount,
  projectBoxId,
  projectRoot,
  qemuUserFor,
  removeProjectBox,
  rootMountWarning,
  type ProjectMount,
} from '../project/project-box.js';
import { parseRepo } from '../project/github-repo.js';
import {
  attachProjectEgress,
  projectPolicy,
  reposFromGitRemotes,
  type ProjectAgent,
  type ProjectEgressOptions,
} from '../project/project-egress.js';
import { autoPublish, parsePublish, publishPorts, type Publisher } from '../project/port-publish.js';

export const RUNTIME_SCRIPT = '.agentbox.runtime.sh';
const INTERRUPTS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export interface ProjectCommandOptions extends ResourceFlags {
  agent: ProjectAgent;
  args: string[];
  cwd: string;
  image?: string;
  repo: string[];
  mount: string[];
  publish: string[];
  autoPublish: boolean;
  allowEgress: string[];
  allowLan: boolean;
  allowHost: boolean;
  git: boolean;
}

/** The agent's command line: full permissions, since the VM is the boundary. */
export function agentArgv(
  agent: ProjectAgent,
  args: string[],
): { argv: string[]; env: Record<string, string> } {
  switch (agent) {
    case 'claude':
      // Claude Code refuses to skip permissions as root unless told it is in a sandbox.
      return { argv: ['claude', '--dangerously-skip-permissions', ...args], env: { IS_SANDBOX: '1' } };
    case 'codex':
      return { argv: ['codex', '--dangerously-bypass-approvals-and-sandbox', ...args], env: {} };
    case 'opencode':
      return {
        argv: ['opencode', ...args],
        env: {
          OPENCODE_CONFIG_CONTENT: JSON.stringify({
            permission: { edit: 'allow', bash: 'allow', webfetch: 'allow' },
          }),
          OPENCODE_DISABLE_AUTOUPDATE: '1',
        },
      };
    case 'shell':
      return { argv: ['bash', ...args], env: {} };
  }
}

function imageAgents(agent: ProjectAgent): AgentCli[] {
  const agents = agentClisFromEnv();
  return agent === 'shell' || agents.includes(agent) ? agents : [...agents, agent];
}

function loadImageArg(home: string, value: string): Image {
  const dir = value.includes('/') ? path.resolve(value) : path.join(imagesDir(home), value);
  return loadImage(dir);
}

/** The egress flags checked before anything is built or booted, in the flags' own words. */
function checkEgressFlags(egress: ProjectEgressOptions): void {
  try {
    compilePolicy(projectPolicy(egress));
  } catch (err) {
    const field = err instanceof AgentboxError ? err.details?.field : undefined;
    const at = typeof field === 'string' ? /^allowIPs\.(\d+)/.exec(field) : null;
    if (!at || !(err instanceof AgentboxError)) throw err;
    throw new AgentboxError(
      'invalid_request',
      `--allow-egress ${egress.allowIPs[Number(at[1])]}: ${err.message.replace(/^invalid egress policy at [^:]+: /, '')}`,
    );
  }
}

/** Runs `.agentbox.runtime.sh` of the project in the box; its output is shown only if it fails. */
async function runRuntimeScript(vm: Vm, root: string, env: Record<string, string>): Promise<number> {
  const script = path.join(root, RUNTIME_SCRIPT);
  try {
    fs.accessSync(script, fs.constants.X_OK);
  } catch {
    return 0;
  }
  const output: Buffer[] = [];
  const exit = await vm.guest.exec(
    { argv: [script], cwd: root, env },
    { onStdout: (c) => void output.push(c), onStderr: (c) => void output.push(c) },
  );
  const status = shellExitStatus(exit);
  if (status !== 0) {
    process.stderr.write(Buffer.concat(output));
    process.stderr.write(
      `agentbox: ${RUNTIME_SCRIPT} failed (exit ${status}); not starting ${path.basename(script)}'s agent\n`,
    );
  }
  return status;
}

/** Runs the agent on a pty, with this terminal in raw mode: keys (Ctrl-C too) go to the box. */
async function runOnTerminal(
  vm: Vm,
  request: { argv: string[]; cwd: string; env: Record<string, string> },
  signal: AbortSignal,
) {
  const stdin = process.stdin;
  const stdout = process.stdout;
  const size = () => ({ rows: stdout.rows || 24, cols: stdout.columns || 80 });
  let resize: ((rows: number, cols: number) => void) | undefined;
  const onResize = () => {
    const s = size();
    resize?.(s.rows, s.cols);
  };
  stdin.setRawMode(true);
  stdout.on('resize', onResize);
  process.on('SIGWINCH', onResize);
  try {
    return await vm.guest.exec(
      { ...request, env: { TERM: process.env.TERM ?? 'xterm-256color', ...request.env }, pty: size() },
      {
        stdin,
        signal,
        onStdout: writeTo(stdout),
        onStderr: writeTo(process.stderr),
        onPty: (terminal) => (resize = (rows, cols) => terminal.resize(rows, cols)),
      },
    );
  } finally {
    stdout.off('resize', onResize);
    process.off('SIGWINCH', onResize);
    stdin.setRawMode(false);
    stdin.pause();
  }
}

/**
 * `agentbox claude|codex|opencode|shell`: the project's box (booted, or the running one re-attached),
 * the project mounted at its host path, egress through a gateway in this process holding the host's
 * credentials, ports published while the command runs, then the agent on this terminal.
 */
export async function runProjectCommand(options: ProjectCommandOptions): Promise<number> {
  const timer = new PhaseTimer();
  const cleanups: (() => unknown)[] = [];
  try {
    timer.phase('project');
    const root = projectRoot(options.cwd);
    const cwd = fs.realpathSync(options.cwd);
    const mounts: ProjectMount[] = [
      { hostPath: root, guestPath: root, readOnly: false },
      ...options.mount.map((m) => parseMount(m, cwd)),
    ];
    const publish = options.publish.map(parsePublish);
    const repos = options.git
      ? [
          ...new Set([
            ...options.repo.map(parseRepo),
            ...(options.repo.length ? [] : reposFromGitRemotes(root)),
          ]),
        ]
      : [];
    const id = projectBoxId(root);
    const egress = {
      agent: options.agent,
      repos,
      allowIPs: options.allowEgress,
      allowLan: options.allowLan,
      allowHost: options.allowHost,
      git: options.git,
    };
    checkEgressFlags(egress);

    timer.phase('image');
    const chosen = options.image;
    const runtime = await openRuntime({
      agents: imageAgents(options.agent),
      ...(chosen ? { image: (home: string) => loadImageArg(home, chosen) } : {}),
    });
    const image = runtime.image;
    const resources = resourcesOf(options);
    const backend = new QemuBackend({
      home: runtime.home,
      accel: runtime.accel.accel,
      tscKhz: runtime.accel.accel === 'tcg' ? hostTscKhz() : undefined,
      detached: true,
    });

    timer.phase('box');
    // Once the flags are good and a box is about to be used: a usage error stays one line.
    const runAs = qemuUserFor(root, process.geteuid?.());
    const warning = rootMountWarning(mounts, process.geteuid?.(), runAs);
    if (warning) process.stderr.write(`${warning}\n`);
    cleanups.push(lockProjectBox(runtime.home, id));
    const opened = await openProjectBox({
      backend,
      id,
      root,
      image,
      config: { imageId: image.manifest.id, resources, mounts, ...(runAs ? { runAs } : {}) },
    });
    if (opened.replaced) process.stderr.write(`agentbox: made a new box for ${root}: ${opened.replaced}\n`);
    const vm = opened.vm;

    timer.phase('mount');
    const mount = await vm.guest.exec(
      { argv: ['sh', '-c', mountScript(mounts)] },
      {
        onStderr: writeTo(process.stderr),
      },
    );
    if (mount.exitCode !== 0) throw new AgentboxError('guest_error', `could not mount ${root} in the box`);

    timer.phase('egress');
    const gateway = await attachProjectEgress(id, vm.guest, egress);
    cleanups.push(() => gateway.close());

    timer.phase('publish');
    const publishers: Publisher[] = [await publishPorts(vm.guest, publish)];
    if (options.autoPublish) {
      const skip = new Set([vm.guest.info?.egressProxyPort ?? 3128, ...publish.map((p) => p.guestPort)]);
      publishers.push(
        autoPublish({ guest: vm.guest, skip, onEvent: (m) => process.stderr.write(`${m}\r\n`) }),
      );
    }
    cleanups.push(() => publishers.forEach((p) => p.close()));

    const { argv, env: cliEnv } = agentArgv(options.agent, options.args);
    const env = { ...agentEnvFor(runtime.accel.accel), ...cliEnv };
    timer.phase('runtime-script');
    const scriptStatus = await runRuntimeScript(vm, root, env);
    if (scriptStatus !== 0) return scriptStatus;

    timer.phase('agent');
    // A signal to this process (Ctrl-C in pipe mode, a closed terminal, kill) ends the agent in the
    // box too; the box itself keeps running for the next command.
    const abort = new AbortController();
    let interrupted: NodeJS.Signals | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      interrupted = signal;
      abort.abort();
    };
    for (const s of INTERRUPTS) process.on(s, onSignal);
    cleanups.push(() => INTERRUPTS.forEach((s) => process.off(s, onSignal)));
    const request = { argv, cwd, env };
    const exit =
      process.stdin.isTTY && process.stdout.isTTY
        ? await runOnTerminal(vm, request, abort.signal)
        : await vm.guest.exec(request, {
            stdin: process.stdin,
            signal: abort.signal,
            onStdout: writeTo(process.stdout),
            onStderr: writeTo(process.stderr),
          });
    if (interrupted) return shellExitStatus({ exitCode: null, signal: interrupted });
    return shellExitStatus(exit);
  } finally {
    timer.phase('detach');
    for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
    timer.report();
  }
}

/** `agentbox project ls`: the project boxes of this home. */
export function projectList(options: { json: boolean; home: string }): number {
  const boxes = listProjectBoxes(boxesDir(options.home));
  if (options.json) writeJson({ boxes });
  else
    for (const b of boxes) process.stdout.write(`${b.id}  ${b.running ? 'running' : 'stopped'}  ${b.root}\n`);
  return 0;
}

/**
 * Which box `project rm` means: an id from `project ls`, an existing directory's project, or the
 * box made for a directory that has since been deleted or moved (its recorded root).
 */
function projectToRemove(target: string, home: string): { id: string; root: string } {
  const boxes = listProjectBoxes(boxesDir(home));
  const byId = boxes.find((b) => b.id === target);
  if (byId) return byId;
  if (fs.existsSync(target)) {
    const root = projectRoot(target);
    return { id: projectBoxId(root), root };
  }
  const byRoot = boxes.find((b) => b.root === path.resolve(target));
  if (byRoot) return byRoot;
  throw new AgentboxError(
    'invalid_request',
    `${target} is neither a directory nor a project box id (see \`agentbox project ls\`)`,
  );
}

/** `agentbox project rm [DIR|ID]`: stops the box of that project and removes its disk. */
export async function projectRemove(options: { dir: string; home: string }): Promise<number> {
  const { id, root } = projectToRemove(options.dir, options.home);
  const backend = new QemuBackend({ home: options.home, accel: 'tcg', tscKhz: undefined });
  // No lock: a command still using the box fails once its VM is gone.
  const removed = await removeProjectBox(backend, id);
  fs.rmSync(path.join(options.home, 'projects', `${id}.lock`), { force: true });
  process.stderr.write(removed ? `agentbox: removed ${id} (${root})\n` : `agentbox: ${root} has no box\n`);
  return removed ? 0 : 1;
}
