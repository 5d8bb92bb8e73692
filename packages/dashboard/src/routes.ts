/* Pure: no DOM, so unit tests run it under Node. */

/** The dashboard's pages; the daemon answers each of these paths with index.html. */
export type Route =
  | { page: 'boxes' }
  | { page: 'box'; id: string }
  | { page: 'tasks'; boxId: string | undefined }
  | { page: 'task'; id: string }
  | { page: 'keys' };

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

export function parseRoute(pathname: string, search: string): Route {
  const parts = pathname.split('/').filter(Boolean).map(decode);
  if (parts[0] === 'boxes' && parts[1]) return { page: 'box', id: parts[1] };
  if (parts[0] === 'tasks' && parts[1]) return { page: 'task', id: parts[1] };
  if (parts[0] === 'keys') return { page: 'keys' };
  if (parts[0] === 'tasks')
    return { page: 'tasks', boxId: new URLSearchParams(search).get('boxId') ?? undefined };
  return { page: 'boxes' };
}
