import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import {
  isSameProcess,
  killProcesses,
  processStartTime,
  RUN_AS_SOCKETS_DIR,
  type Image,
  type QemuBackend,
  type Vm,
  type VmResources,
  type VmShare,
  type VmUser,
} from '@agentbox/vm';

/** Box ids of per-project boxes start with this; the rest is a hash of the project path. */
export const PROJECT_BOX_PREFIX = 'proj-';
const STATE_FILE = 'project.json';
/** 9p message size: bigger than the 8 KiB default, so reads and readdir move more per round trip. */
export const NINEP_MSIZE = 512 * 1024;

/** A host directory mounted into the box, at `guestPath`. */
export interface ProjectMount {
  hostPath: string;
  guestPath: string;
  readOnly: boolean;
}

/** What a project box was made with; a different config makes a new box. */
export interface ProjectBoxConfig {
  imageId: string;
  resources: VmResources;
  mounts: ProjectMount[];
  /** The user its VM process runs as, when not this process's (see qemuUserFor). */
  runAs?: VmUser;
}

interface ProjectBoxState {
  root: string;
  pid: number;
  startTime: number;
  configHash: string;
  createdAt: string;
}

/** `proj-<12 hex>` of the project's real path: the same directory always gets the same box. */
export function projectBoxId(root: string): string {
  return PROJECT_BOX_PREFIX + createHash('sha256').update(root).digest('hex').slice(0, 12);
}

/** The git top level of `dir` if it is in a work tree (and git exists), else `dir` itself. */
export function projectRoot(dir: string): string {
  const real = fs.realpathSync(dir);
  try {
    const top = execFileSync('git', ['-C', real, 'rev-parse', '--show-toplevel'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    return top ? fs.realpathSync(top) : real;
  } catch {
    return real;
  }
}

/**
 * Whether users other than the directory's owner and group can reach it: every directory from `/`
 * down to it lets others through (o+x). QEMU serves a mount as the user it runs as; run as root,
 * code in the box can make root-owned files there, setuid ones included, which such a user could
 * run.
 */
export function reachableByOthers(dir: string, stat: (p: string) => { mode: number } = fs.statSync): boolean {
  for (let at = path.resolve(dir); ; at = path.dirname(at)) {
    if ((stat(at).mode & 0o001) === 0) return false;
    if (at === path.dirname(at)) return true;
  }
}

/**
 * Who QEMU serves a project's mounts as. Run as root, it would make what the guest asks in them as
 * root (setuid-root files included, with `security_model=none`), so it drops to the project
 * directory's owner (`-runas`): the agent's files are then that user's, as if they had written
 * them. Undefined: this process's own user (not root, or a project root owns).
 */
export function qemuUserFor(
  root: string,
  euid: number | undefined,
  stat: (p: string) => { uid: number; gid: number } = fs.statSync,
): VmUser | undefined {
  if (euid !== 0) return undefined;
  const { uid, gid } = stat(root);
  return uid === 0 ? undefined : { uid, gid };
}

/**
 * The warning for a writable mount others can reach while QEMU runs as root (a project root
 * owns); undefined when there is none.
 */
export function rootMountWarning(
  mounts: readonly ProjectMount[],
  euid: number | undefined,
  runAs?: VmUser,
): string | undefined {
  if (euid !== 0 || runAs) return undefined;
  const exposed = mounts.filter((m) => !m.readOnly && reachableByOthers(m.hostPath)).map((m) => m.hostPath);
  if (exposed.length === 0) return undefined;
  return (
    `agentbox: running as root, code in the box can make root-owned files, setuid ones included, in ` +
    `${exposed.join(', ')}, which other users of this host can reach; run agentbox as the directory's owner`
  );
}

/** `HOST[:GUEST][:ro]` → a mount; HOST must be an existing directory, GUEST absolute (default: HOST). */
export function parseMount(spec: string, cwd: string): ProjectMount {
  const parts = spec.split(':');
  const readOnly = parts.length > 1 && parts[parts.length - 1] === 'ro';
  if (readOnly) parts.pop();
  if (parts.length > 2 || !parts[0]) {
    throw new AgentboxError(
      'invalid_request',
      `--mount expects HOST[:GUEST][:ro], got ${JSON.stringify(spec)}`,
    );
  }
  let hostPath: string;
  try {
    hostPath = fs.realpathSync(path.resolve(cwd, parts[0]));
  } catch {
    throw new AgentboxError('invalid_request', `--mount: ${parts[0]} does not exist`);
  }
  if (!fs.statSync(hostPath).isDirectory())
    throw new AgentboxError('invalid_request', `--mount: ${hostPath} is not a directory`);
  const guestPath = parts[1] ?? hostPath;
  if (!path.isAbsolute(guestPath) || guestPath.split('/').includes('..') || /[\n\0]/.test(guestPath))
    throw new AgentboxError(
      'invalid_request',
      `--mount: the box path ${JSON.stringify(guestPath)} must be absolute`,
    );
  return { hostPath, guestPath: path.normalize(guestPath), readOnly };
}

export function configHash(config: ProjectBoxConfig): string {
  return createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 16);
}

export function sharesOf(mounts: readonly ProjectMount[]): VmShare[] {
  return mounts.map((m, i) => ({ tag: `agentbox${i}`, hostPath: m.hostPath, readOnly: m.readOnly }));
}

/** Single quotes for sh. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Shell script that mounts every share at its guest path (idempotent: mounted ones are skipped).
 * The box's kernel has 9p built in.
 */
export function mountScript(mounts: readonly ProjectMount[]): string {
  const lines = ['set -e'];
  mounts.forEach((m, i) => {
    const p = shq(m.guestPath);
    lines.push(
      `mountpoint -q ${p} || { mkdir -p ${p} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=${NINEP_MSIZE}${m.readOnly ? ',ro' : ''} agentbox${i} ${p}; }`,
    );
  });
  // Files on the mount belong to the host user, not to root in the box.
  lines.push(
    `git config --global --get-all safe.directory | grep -qxF '*' || git config --global --add safe.directory '*'`,
  );
  return lines.join('\n');
}

function readState(dir: string): ProjectBoxState | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), 'utf8')) as ProjectBoxState;
  } catch {
    return undefined;
  }
}

/**
 * One process at a time drives a project box (it owns the box's guest channel while it runs).
 * The lock holds our pid; a lock whose process is gone is taken over.
 */
export function lockProjectBox(home: string, id: string): () => void {
  const dir = path.join(home, 'projects');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${id}.lock`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      return () => {
        try {
          if (fs.readFileSync(file, 'utf8') === String(process.pid)) fs.rmSync(file);
        } catch {
          // already gone (the box was removed)
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(fs.readFileSync(file, 'utf8'));
      if (holder > 0 && holder !== process.pid && processStartTime(holder) !== undefined) {
        throw new AgentboxError(
          'invalid_state',
          `this project's box is in use by another agentbox command (pid ${holder}); one command at a time can use it`,
        );
      }
      fs.rmSync(file, { force: true });
    }
  }
  throw new AgentboxError('invalid_state', `could not lock ${file}`);
}

export interface OpenedProjectBox {
  vm: Vm;
  /** true: booted now; false: an existing box was re-attached. */
  fresh: boolean;
  /** Why an existing box was replaced, if it was. */
  replaced?: string;
}

/**
 * The project's box: the running one re-attached when it was made with the same config, else a
 * new one booted (an old one with another config, or a dead one, is removed first). The VM runs
 * detached: it outlives this command for the next one.
 */
export async function openProjectBox(options: {
  backend: QemuBackend;
  id: string;
  root: string;
  image: Image;
  config: ProjectBoxConfig;
}): Promise<OpenedProjectBox> {
  const { backend, id } = options;
  const dir = backend.boxDir(id);
  const hash = configHash(options.config);
  const state = readState(dir);
  let replaced: string | undefined;
  if (state) {
    const alive = isSameProcess(state.pid, state.startTime);
    if (alive && state.configHash === hash) {
      try {
        const vm = await backend.adopt({
          id,
          pid: state.pid,
          startTime: state.startTime,
          timeoutMs: 20_000,
          ...(options.config.runAs ? { runAs: options.config.runAs } : {}),
        });
        if (vm.state === 'paused') await vm.resume();
        return { vm, fresh: false };
      } catch (err) {
        replaced = `the running box did not answer (${(err as Error).message})`;
      }
    } else {
      replaced = alive ? 'its image, resources or mounts changed' : 'its VM had stopped';
    }
    await removeProjectBox(backend, id);
  } else if (fs.existsSync(path.join(dir, 'disk.qcow2'))) {
    await removeProjectBox(backend, id);
  }
  const vm = await backend.create({
    id,
    image: options.image,
    resources: options.config.resources,
    shares: sharesOf(options.config.mounts),
    ...(options.config.runAs ? { runAs: options.config.runAs } : {}),
  });
  try {
    await vm.start();
    const pid = vm.pid!;
    const startTime = processStartTime(pid);
    if (startTime === undefined)
      throw new AgentboxError('boot_failed', `VM ${id} exited right after booting`);
    const next: ProjectBoxState = {
      root: options.root,
      pid,
      startTime,
      configHash: hash,
      createdAt: new Date().toISOString(),
    };
    fs.writeFileSync(path.join(dir, STATE_FILE), JSON.stringify(next, null, 2) + '\n', { mode: 0o600 });
  } catch (err) {
    await vm.destroy().catch(() => undefined);
    throw err;
  }
  return { vm, fresh: true, ...(replaced ? { replaced } : {}) };
}

/** Kills a project box's VM (if it runs) and removes its files; true if there was one. */
export async function removeProjectBox(backend: QemuBackend, id: string): Promise<boolean> {
  const dir = backend.boxDir(id);
  if (!fs.existsSync(dir)) return false;
  const state = readState(dir);
  if (state) await killProcesses([state]);
  await fs.promises.rm(dir, { recursive: true, force: true });
  // The sockets of a VM that ran as the project's owner (socketDirOf), if it did.
  await fs.promises.rm(path.join(RUN_AS_SOCKETS_DIR, id), { recursive: true, force: true });
  return true;
}

/** Project boxes under `boxesDir`: id, project root, whether its VM runs. */
export function listProjectBoxes(boxesDir: string): { id: string; root: string; running: boolean }[] {
  let ids: string[];
  try {
    ids = fs.readdirSync(boxesDir).filter((d) => d.startsWith(PROJECT_BOX_PREFIX));
  } catch {
    return [];
  }
  return ids.map((id) => {
    const state = readState(path.join(boxesDir, id));
    return {
      id,
      root: state?.root ?? '?',
      running: state ? isSameProcess(state.pid, state.startTime) : false,
    };
  });
}
