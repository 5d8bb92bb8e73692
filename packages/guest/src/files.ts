import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { DirListing, EntryInfo, ParsedRequest } from '@agentbox/protocol';
import { GuestOpError, errnoCode, type RequestContext } from './context.js';
import type { NativeAddon } from './native.js';

type Op<K extends ParsedRequest['op']> = Extract<ParsedRequest, { op: K }>;

const READ_CHUNK_BYTES = 256 * 1024;
/** Bytes of a file read that may be queued towards the host before reading pauses. */
const MAX_QUEUED_READ_BYTES = 4 * 1024 * 1024;

function absolute(p: string): string {
  if (!path.isAbsolute(p)) throw new GuestOpError('invalid_request', `path must be absolute: ${p}`);
  return path.normalize(p);
}

/** Maps fs errors to guest error codes with a message that names the path, never a stack. */
export function fsError(err: unknown, p: string): GuestOpError {
  switch (errnoCode(err) ?? '') {
    case 'ENOENT':
      return new GuestOpError('file_not_found', `no such file or directory: ${p}`);
    case 'ENOTDIR':
      return new GuestOpError('file_not_found', `not a directory: ${p}`);
    case 'EISDIR':
      return new GuestOpError('invalid_request', `is a directory: ${p}`);
    case 'EEXIST':
      return new GuestOpError('invalid_request', `already exists: ${p}`);
    case 'ENOTEMPTY':
      return new GuestOpError('invalid_request', `directory not empty: ${p}`);
    case 'ENOSPC':
      return new GuestOpError('guest_error', `no space left on the box's disk writing ${p}`);
    default:
      return new GuestOpError('guest_error', `${p}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function typeOf(st: fs.Stats): EntryInfo['type'] {
  return st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other';
}

/** The entry of `p` itself (lstat); a symlink also says what it resolves to. */
async function entryOf(p: string): Promise<EntryInfo> {
  const st = await fsp.lstat(p);
  const entry: EntryInfo = {
    name: path.basename(p) || '/',
    path: p,
    type: typeOf(st),
    size: st.size,
    mode: st.mode & 0o7777,
    modifiedMs: st.mtimeMs,
  };
  if (entry.type === 'symlink') {
    // Dangling or looping: no target type, which is how a client tells.
    const target = await fsp.stat(p).catch(() => undefined);
    const targetType = target && typeOf(target);
    if (targetType && targetType !== 'symlink') entry.targetType = targetType;
  }
  return entry;
}

export async function statFile(req: Op<'file.stat'>): Promise<EntryInfo> {
  const p = absolute(req.path);
  try {
    return await entryOf(p);
  } catch (err) {
    throw fsError(err, p);
  }
}

/**
 * A directory's entries, sorted by name. Names are read as bytes: one that is not valid UTF-8 cannot
 * travel in JSON, and decoding it lossily (U+FFFD) would name a different file, or none. Those are
 * counted in `omitted` rather than dropped without a word.
 */
export async function listDir(req: Op<'file.list'>): Promise<DirListing> {
  const dir = absolute(req.path);
  let raw: Buffer[];
  try {
    raw = await fsp.readdir(dir, { encoding: 'buffer' });
  } catch (err) {
    throw fsError(err, dir);
  }
  const names = raw.filter((name) => isUtf8(name)).map((name) => name.toString('utf8'));
  const entries = await Promise.all(
    names.sort().map(async (name) => {
      try {
        return await entryOf(path.join(dir, name));
      } catch {
        return undefined; // vanished between readdir and lstat
      }
    }),
  );
  return {
    entries: entries.filter((e): e is EntryInfo => e !== undefined),
    omitted: raw.length - names.length,
  };
}

/** Frames of a file sent by sendfile: big, since no JavaScript touches their bytes. */
const SENDFILE_FRAME_BYTES = 256 * 1024;

/**
 * Streams a regular file as Data frames after a `file` header, then End. With the native addon
 * and a channel that takes fd frames, the kernel moves the bytes (sendfile): under emulation a
 * copy through a buffer is most of the cost.
 */
export async function readFile(
  req: Op<'file.read'>,
  ctx: RequestContext,
  native?: NativeAddon,
): Promise<Record<string, never>> {
  const p = absolute(req.path);
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO waits for a writer otherwise, and would hold the agent's loop.
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw fsError(err, p);
  }
  let cancelled = false;
  ctx.onCancel(() => (cancelled = true));
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new GuestOpError('invalid_request', `not a regular file: ${p}`);
    await ctx.mux.sendJson(ctx.channel, { type: 'file', size: st.size });
    // /proc and /sys files say size 0 and have content: those are read to their end.
    if (native && ctx.mux.sendsFromFds && st.size > 0)
      await sendFileFrames(fd, st.size, p, ctx, () => cancelled);
    else
      await sendReadChunks(
        fd,
        ctx,
        () => cancelled,
        () => (cancelled = true),
      );
    await ctx.mux.sendEnd(ctx.channel);
    return {};
  } catch (err) {
    throw err instanceof GuestOpError ? err : fsError(err, p);
  } finally {
    fs.closeSync(fd);
  }
}

function readChunk(fd: number, buffer: Buffer): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.read(fd, buffer, 0, buffer.length, null, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead))),
  );
}

async function sendReadChunks(
  fd: number,
  ctx: RequestContext,
  cancelled: () => boolean,
  cancel: () => void,
): Promise<void> {
  let queued = 0;
  let drained: (() => void) | undefined;
  while (!cancelled()) {
    const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    const bytesRead = await readChunk(fd, buffer);
    if (bytesRead === 0) break;
    queued += bytesRead;
    void ctx.mux.sendData(ctx.channel, 'data', buffer.subarray(0, bytesRead)).then(() => {
      queued -= bytesRead;
      drained?.();
    }, cancel);
    while (queued > MAX_QUEUED_READ_BYTES && !cancelled()) await new Promise<void>((r) => (drained = r));
  }
}

async function sendFileFrames(
  fd: number,
  size: number,
  p: string,
  ctx: RequestContext,
  cancelled: () => boolean,
): Promise<void> {
  for (let offset = 0; offset < size && !cancelled();) {
    const bytes = Math.min(SENDFILE_FRAME_BYTES, size - offset);
    const moved = await ctx.mux.sendDataFrom(ctx.channel, 'data', { fd, offset }, bytes);
    // The frame was padded to its length; the host must not take the padding for the file.
    if (moved < bytes) throw new GuestOpError('guest_error', `${p} shrank while it was read`);
    offset += bytes;
  }
}

/** What a replaced file keeps: its mode and owner, unless the upload sets a mode. */
async function existingFile(p: string): Promise<fs.Stats | undefined> {
  try {
    const st = await fsp.stat(p);
    return st.isFile() ? st : undefined;
  } catch {
    return undefined;
  }
}

/** Where an upload to `p` goes: through a symlink to its target, as a shell's `>` would. */
async function uploadTarget(p: string): Promise<string> {
  try {
    return await fsp.realpath(p);
  } catch {
    return p; // no file yet (or a dangling link): the upload makes `p`
  }
}

/**
 * Receives a file as Data frames into a temporary sibling and renames it into place on End, so a
 * reader never sees a half-written file and a cancelled upload leaves the old file intact. A
 * replaced file keeps its mode and owner; a symlink is written through, not replaced.
 */
export async function writeFile(req: Op<'file.write'>, ctx: RequestContext): Promise<{ bytes: number }> {
  const p = absolute(req.path);
  if (req.makeParents)
    await fsp.mkdir(path.dirname(p), { recursive: true }).catch((err) => Promise.reject(fsError(err, p)));
  const target = await uploadTarget(p);
  const previous = await existingFile(target);
  const mode = req.mode ?? (previous ? previous.mode & 0o7777 : 0o644);
  // A short name: `.<name>.<suffix>` would pass NAME_MAX for a long but legal name.
  const tmp = path.join(path.dirname(target), `.agentbox-${randomBytes(6).toString('hex')}`);
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(tmp, 'wx', mode);
  } catch (err) {
    throw fsError(err, p);
  }
  let bytes = 0;
  let chain = Promise.resolve();
  try {
    await new Promise<void>((resolve, reject) => {
      ctx.onCancel(() => reject(new GuestOpError('invalid_request', `upload of ${p} was cancelled`)));
      ctx.onData(
        (chunk) => {
          chain = chain.then(async () => {
            await handle.write(chunk);
            bytes += chunk.length;
            ctx.mux.consumed(ctx.channel, chunk.length);
          });
          chain.catch(reject);
        },
        () => void chain.then(resolve, reject),
      );
    });
    if (previous) await handle.chown(previous.uid, previous.gid).catch(() => undefined);
    // After chown, which clears set-id bits; and open's mode went through the umask.
    await handle.chmod(mode);
    await handle.close();
    await fsp.rename(tmp, target);
    return { bytes };
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw err instanceof GuestOpError ? err : fsError(err, p);
  }
}

export async function makeDir(req: Op<'file.mkdir'>): Promise<Record<string, never>> {
  const p = absolute(req.path);
  try {
    await fsp.mkdir(p, { recursive: req.recursive });
    return {};
  } catch (err) {
    throw fsError(err, p);
  }
}

export async function removePath(req: Op<'file.remove'>): Promise<Record<string, never>> {
  const p = absolute(req.path);
  if (p === '/') throw new GuestOpError('invalid_request', 'refusing to remove /');
  try {
    const st = await fsp.lstat(p);
    if (st.isDirectory() && !req.recursive) await fsp.rmdir(p);
    else await fsp.rm(p, { recursive: req.recursive });
    return {};
  } catch (err) {
    throw fsError(err, p);
  }
}
