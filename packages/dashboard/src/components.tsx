import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError } from './api-client.js';

/** An error as the API gave it: code, message, request id. */
export function ErrorNote({ error }: { error: unknown }) {
  if (error === undefined || error === null) return null;
  if (error instanceof ApiError) {
    return (
      <p class="error" role="alert" data-testid="error" data-code={error.code}>
        <code>{error.code}</code> {error.message}
        {error.requestId ? <span class="muted"> (request {error.requestId})</span> : null}
      </p>
    );
  }
  return (
    <p class="error" role="alert" data-testid="error">
      {error instanceof Error ? error.message : typeof error === 'string' ? error : JSON.stringify(error)}
    </p>
  );
}

export function StateBadge({ state }: { state: string }) {
  return (
    <span class={`badge state-${state}`} data-testid="state">
      {state}
    </span>
  );
}

/**
 * A destructive button that asks once more: the first click arms it ("Confirm …"), the second
 * acts; it disarms itself after a few seconds.
 */
export function ConfirmButton(props: {
  label: string;
  confirmLabel: string;
  onConfirm: () => Promise<void>;
  testId: string;
  disabled?: boolean;
}) {
  const [armed, setArmed] = useState(false);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (!armed) return;
    const timer = setTimeout(() => setArmed(false), 5000);
    return () => clearTimeout(timer);
  }, [armed]);
  return (
    <button
      type="button"
      class={armed ? 'danger armed' : 'danger'}
      data-testid={armed ? `${props.testId}-confirm` : props.testId}
      disabled={props.disabled === true || busy}
      onClick={async () => {
        if (!armed) {
          setArmed(true);
          return;
        }
        setBusy(true);
        try {
          await props.onConfirm();
        } finally {
          setBusy(false);
          setArmed(false);
        }
      }}
    >
      {busy ? '…' : armed ? props.confirmLabel : props.label}
    </button>
  );
}

export function Section(props: { title: string; actions?: ComponentChildren; children: ComponentChildren }) {
  return (
    <section class="panel">
      <header class="panel-head">
        <h2>{props.title}</h2>
        <div class="actions">{props.actions}</div>
      </header>
      {props.children}
    </section>
  );
}
