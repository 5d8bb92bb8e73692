import { useState } from 'preact/hooks';
import { checkKey } from '../api-client.js';
import { ErrorNote } from '../components.js';

/** Asks for an API key and checks it against the daemon before keeping it. */
export function LoginView(props: { onLogin: (key: string) => void; notice: string | undefined }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await checkKey(key.trim());
      props.onLogin(key.trim());
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="login">
      <form class="panel login-form" onSubmit={submit} data-testid="login-form">
        <h1>agentbox</h1>
        <p class="muted">
          Sign in with an API key (printed by the first <code>agentbox serve</code>, or made with{' '}
          <code>agentbox keys create</code>). It is kept in this tab only.
        </p>
        {props.notice ? <p class="notice">{props.notice}</p> : null}
        <label>
          API key
          <input
            type="password"
            name="key"
            autoComplete="off"
            placeholder="abk_…"
            value={key}
            onInput={(e) => setKey(e.currentTarget.value)}
            required
            autoFocus
          />
        </label>
        <button type="submit" disabled={busy || key.trim() === ''}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
        <ErrorNote error={error} />
      </form>
    </main>
  );
}
