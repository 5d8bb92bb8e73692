import type { Readable } from 'node:stream';
import { AgentboxError, type DirListing, type EntryInfo, type ProcessInfo } from '@agentbox/protocol';
import type { Actor } from '../store/key-store.js';
import type { BoxLease, BoxService } from './box-service.js';
import { boxPath, workspaceFile } from './paths.js';

/** Directories of dependencies and caches, left out of the seed's workspace listing. */
export const SKIPPED_DIRS: ReadonlySet<string> = new Set([
  'node_modules',
  '.git',
  '__pycache__',
  '.venv',
  'venv',
  '.cache',
  '.npm',
  '.pytest_cache',
  '.mypy_cache',
]);
const MAX_LISTED_FILES = 10_000;
/** Directories one listing may read: the guest decides how many there are. */
const MAX_LISTED_DIRS = 10_000;
const MAX_DEPTH = 12;

type Sink = (chunk: Buffer) => void | Promise<void>;

export interface FileServiceDeps {
  boxes: Pick<BoxService, 'withBox' | 'getByUser'>;
}

interface BoxRef {
  actor: Actor;
  id: string;
  /** The request's end (a client gone, a key revoked): the guest call is cancelled. */
  signal?: AbortSignal | undefined;
}

interface UserRef {
  actor: Actor;
  userId: string;
  signal?: AbortSignal | undefined;
}

/**
 * Files and processes of boxes, over the guest channel. Each call holds its box (`withBox`): a
 * paused or hibernated box is woken, and none is paused while a transfer runs.
 */
export function createFileService(deps: FileServiceDeps) {
  const box = <T>(ref: BoxRef, fn: (lease: BoxLease) => Promise<T>) =>
    deps.boxes.withBox({ actor: ref.actor, id: ref.id }, fn);

  /**
   * Regular files under `dir` into `into.files`, and the count of entries the guest had to leave out.
   * A symlink to a regular file counts as one (download reads through it, as /v1 does); a symlink to a
   * directory is not descended into: a link to `.` or `/` would repeat or flood the listing.
   */
  async function walk(
    lease: BoxLease,
    root: string,
    dir: string,
    depth: number,
    into: { files: string[]; omitted: number; dirs: number },
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (++into.dirs > MAX_LISTED_DIRS) return;
    let listing: DirListing;
    try {
      listing = await lease.guest.list(dir, { signal });
    } catch (err) {
      if (err instanceof AgentboxError && err.code === 'file_not_found') return;
      throw err;
    }
    into.omitted += listing.omitted;
    for (const entry of listing.entries) {
      if (into.files.length >= MAX_LISTED_FILES) return;
      if (entry.type === 'file' || (entry.type === 'symlink' && entry.targetType === 'file'))
        into.files.push(entry.path.slice(root.length + 1));
      else if (entry.type === 'directory' && depth < MAX_DEPTH && !SKIPPED_DIRS.has(entry.name))
        await walk(lease, root, entry.path, depth + 1, into, signal);
    }
  }

  const userRef = (options: UserRef): BoxRef => ({
    actor: options.actor,
    id: deps.boxes.getByUser(options).id,
    signal: options.signal,
  });

  return {
    /**
     * Seed: regular files under the workspace, relative to it, sorted; `omitted` counts names that
     * are not valid UTF-8, which a JSON path cannot carry.
     */
    listWorkspace(options: UserRef): Promise<{ files: string[]; omitted: number }> {
      return box(userRef(options), async (lease) => {
        const found = { files: [] as string[], omitted: 0, dirs: 0 };
        await walk(lease, lease.workspace, lease.workspace, 0, found, options.signal);
        return { files: found.files.sort(), omitted: found.omitted };
      });
    },

    /**
     * Seed: one file of the workspace streamed to `sink`. A symlink is read through wherever it
     * points, as /v1 does: only the name is confined to the workspace (the VM is the boundary).
     */
    downloadWorkspaceFile(options: UserRef & { filename: string; sink: Sink }) {
      const call = { signal: options.signal };
      return box(userRef(options), async ({ guest, workspace }) => {
        const full = workspaceFile(options.filename, workspace);
        const info = await guest.stat(full, call);
        // No targetType: a dangling link (the read says file_not_found), or an agent that predates it.
        const type = info.type === 'symlink' ? (info.targetType ?? 'file') : info.type;
        if (type !== 'file') throw new AgentboxError('file_not_found', `${options.filename} is not a file`);
        return guest.readFile(full, options.sink, call);
      });
    },

    stat(options: BoxRef & { path: string }): Promise<EntryInfo> {
      return box(options, ({ guest, workspace }) =>
        guest.stat(boxPath(options.path, workspace), { signal: options.signal }),
      );
    },

    list(options: BoxRef & { path: string }): Promise<{ path: string } & DirListing> {
      return box(options, async ({ guest, workspace }) => {
        const p = boxPath(options.path, workspace);
        return { path: p, ...(await guest.list(p, { signal: options.signal })) };
      });
    },

    read(options: BoxRef & { path: string; sink: Sink }): Promise<{ size: number }> {
      return box(options, ({ guest, workspace }) =>
        guest.readFile(boxPath(options.path, workspace), options.sink, { signal: options.signal }),
      );
    },

    write(
      options: BoxRef & { path: string; source: Readable | Buffer },
    ): Promise<{ path: string; bytes: number }> {
      return box(options, async ({ guest, workspace }) => {
        const p = boxPath(options.path, workspace);
        const { bytes } = await guest.writeFile(p, options.source, {
          makeParents: true,
          signal: options.signal,
        });
        return { path: p, bytes };
      });
    },

    remove(options: BoxRef & { path: string }): Promise<{ path: string; deleted: true }> {
      return box(options, async ({ guest, workspace }) => {
        const p = boxPath(options.path, workspace);
        if (p === '/' || p === workspace) {
          throw new AgentboxError('invalid_request', `refusing to delete ${p}`, {
            details: { field: 'path' },
          });
        }
        await guest.remove(p, true, { signal: options.signal });
        return { path: p, deleted: true as const };
      });
    },

    processes(options: BoxRef): Promise<ProcessInfo[]> {
      return box(options, ({ guest }) => guest.listProcesses({ signal: options.signal }));
    },

    killProcess(
      options: Omit<BoxRef, 'signal'> & { pid: number; signal: string; abort?: AbortSignal | undefined },
    ): Promise<{ pid: number; signal: string }> {
      return box({ actor: options.actor, id: options.id }, async ({ guest }) => {
        await guest.killProcess(options.pid, options.signal, { signal: options.abort });
        return { pid: options.pid, signal: options.signal };
      });
    },

    /** Seed: processes of a user's box as {pid, cmd, args, cwd}. */
    async userProcesses(options: UserRef) {
      const list = await box(userRef(options), ({ guest }) =>
        guest.listProcesses({ signal: options.signal }),
      );
      return list.map((p) => {
        const [cmd = '', ...args] = p.command.split(' ').filter(Boolean);
        return { pid: p.pid, cmd, args, cwd: null };
      });
    },
  };
}

export type FileService = ReturnType<typeof createFileService>;
