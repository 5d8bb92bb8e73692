/* Pure: no DOM, so unit tests run it under Node. Paths in a box are POSIX and absolute here. */
import type { EntryInfo } from '@agentbox/protocol';

export const WORKSPACE = '/workspace';

/** `dir` + `name`, without a doubled slash; a name with a slash or `..` is refused by the daemon. */
export function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** The directory above `path` (`/` stays `/`). */
export function parentOf(path: string): string {
  const cut = path.replace(/\/+$/, '').lastIndexOf('/');
  return cut <= 0 ? '/' : path.slice(0, cut);
}

/** Each directory from the root down to `path`, for a breadcrumb: `[{name: '/', path: '/'}, …]`. */
export function crumbs(path: string): { name: string; path: string }[] {
  const parts = path.split('/').filter(Boolean);
  return [
    { name: '/', path: '/' },
    ...parts.map((name, i) => ({ name, path: `/${parts.slice(0, i + 1).join('/')}` })),
  ];
}

/** Whether a listing entry opens as a directory (a symlink to one does too). */
export function opensAsDirectory(entry: Pick<EntryInfo, 'type' | 'targetType'>): boolean {
  return entry.type === 'directory' || (entry.type === 'symlink' && entry.targetType === 'directory');
}

/** Directories first, then by name. */
export function sortEntries<T extends Pick<EntryInfo, 'name' | 'type' | 'targetType'>>(entries: T[]): T[] {
  return [...entries].sort(
    (a, b) =>
      Number(opensAsDirectory(b)) - Number(opensAsDirectory(a)) ||
      (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
}
