import { useEffect, useState } from 'preact/hooks';

/** The dashboard's pages; the daemon answers each of these paths with index.html. */
export type Route =
  | { page: 'boxes' }
  | { page: 'box'; id: string }
  | { page: 'tasks'; boxId: string | undefined }
  | { page: 'task'; id: string };

export function parseRoute(pathname: string, search: string): Route {
  const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'boxes' && parts[1]) return { page: 'box', id: parts[1] };
  if (parts[0] === 'tasks' && parts[1]) return { page: 'task', id: parts[1] };
  if (parts[0] === 'tasks')
    return { page: 'tasks', boxId: new URLSearchParams(search).get('boxId') ?? undefined };
  return { page: 'boxes' };
}

const listeners = new Set<() => void>();

export function navigate(href: string): void {
  if (href === `${location.pathname}${location.search}`) return;
  history.pushState(null, '', href);
  for (const listener of listeners) listener();
}

/** The current route; re-renders on `navigate` and on back/forward. */
export function useRoute(): Route {
  const read = () => parseRoute(location.pathname, location.search);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const update = () => setRoute(read());
    listeners.add(update);
    window.addEventListener('popstate', update);
    return () => {
      listeners.delete(update);
      window.removeEventListener('popstate', update);
    };
  }, []);
  return route;
}

/** Click handler of an in-app link: plain clicks navigate without a reload. */
export function linkTo(href: string) {
  return {
    href,
    onClick: (e: MouseEvent) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      navigate(href);
    },
  };
}
