import { useEffect, useState } from 'preact/hooks';
import { parseRoute, type Route } from './routes.js';

export type { Route } from './routes.js';

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
