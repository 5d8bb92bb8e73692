import { useEffect, useMemo, useState } from 'preact/hooks';
import { createApiClient, health, type ApiClient } from './api-client.js';
import { linkTo, useRoute, type Route } from './router.js';
import type { Capabilities } from './views/box-actions.js';
import { BoxDetailView } from './views/box-detail-view.js';
import { BoxesView } from './views/boxes-view.js';
import { KeysView } from './views/keys-view.js';
import { LoginView } from './views/login-view.js';
import { TaskDetailView } from './views/task-detail-view.js';
import { TasksView } from './views/tasks-view.js';

/** The key lives in this tab's sessionStorage only: closing the tab signs out. */
const KEY_ITEM = 'agentbox.apiKey';

export function App() {
  const [key, setKey] = useState<string | undefined>(() => sessionStorage.getItem(KEY_ITEM) ?? undefined);
  const [notice, setNotice] = useState<string | undefined>(undefined);

  const signOut = (message?: string) => {
    sessionStorage.removeItem(KEY_ITEM);
    setKey(undefined);
    setNotice(message);
  };

  const api = useMemo(
    () =>
      key === undefined
        ? undefined
        : createApiClient({
            key,
            // A key revoked while signed in: back to the login with a word why.
            fetch: async (input, init) => {
              const res = await fetch(input, init);
              if (res.status === 401) setTimeout(() => signOut('The daemon refused the key; sign in again.'));
              return res;
            },
          }),
    [key],
  );

  if (!api || key === undefined) {
    return (
      <LoginView
        notice={notice}
        onLogin={(k) => {
          sessionStorage.setItem(KEY_ITEM, k);
          setNotice(undefined);
          setKey(k);
        }}
      />
    );
  }
  return <Shell api={api} apiKey={key} onSignOut={() => signOut('Signed out.')} />;
}

function Shell(props: { api: ApiClient; apiKey: string; onSignOut: () => void }) {
  const route = useRoute();
  const [pause, setPause] = useState(false);
  const [admin, setAdmin] = useState(false);
  const [version, setVersion] = useState<string | undefined>(undefined);
  useEffect(() => {
    let alive = true;
    void props.api
      .paths()
      .then(
        (paths) => alive && setPause(paths.has('/v1/boxes/{id}/pause') && paths.has('/v1/boxes/{id}/resume')),
      )
      .catch(() => undefined);
    // Only an admin key may list keys (a user key gets 403): that is what shows the Keys section.
    void props.api
      .listKeys()
      .then(() => alive && setAdmin(true))
      .catch(() => undefined);
    void health().then((h) => alive && setVersion(h?.version));
    return () => {
      alive = false;
    };
  }, [props.api]);
  const caps: Capabilities = { pause, pauseMissing: () => setPause(false) };
  const section =
    route.page === 'task' || route.page === 'tasks' ? 'tasks' : route.page === 'keys' ? 'keys' : 'boxes';

  return (
    <>
      <header class="top">
        <a class="brand" {...linkTo('/boxes')}>
          agentbox
        </a>
        <nav>
          <a class={section === 'boxes' ? 'active' : ''} data-testid="nav-boxes" {...linkTo('/boxes')}>
            Boxes
          </a>
          <a class={section === 'tasks' ? 'active' : ''} data-testid="nav-tasks" {...linkTo('/tasks')}>
            Tasks
          </a>
          {admin ? (
            <a class={section === 'keys' ? 'active' : ''} data-testid="nav-keys" {...linkTo('/keys')}>
              Keys
            </a>
          ) : null}
        </nav>
        <span class="spacer" />
        {version ? <span class="muted small">daemon {version}</span> : null}
        <button type="button" data-testid="sign-out" onClick={props.onSignOut}>
          Sign out
        </button>
      </header>
      <main class="content">
        <Page route={route} api={props.api} apiKey={props.apiKey} caps={caps} />
      </main>
    </>
  );
}

function Page(props: { route: Route; api: ApiClient; apiKey: string; caps: Capabilities }) {
  const { route, api, caps } = props;
  switch (route.page) {
    case 'boxes':
      return <BoxesView api={api} caps={caps} />;
    case 'box':
      return <BoxDetailView key={route.id} api={api} caps={caps} id={route.id} />;
    case 'tasks':
      return <TasksView key={route.boxId ?? ''} api={api} boxId={route.boxId} />;
    case 'task':
      return <TaskDetailView key={route.id} api={api} id={route.id} />;
    case 'keys':
      // A user key is refused by the daemon (403); the view shows that refusal.
      return <KeysView api={api} signedInWith={props.apiKey} />;
  }
}
