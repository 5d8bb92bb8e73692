import type { ApiKey, CreatedApiKey } from '@agentbox/protocol';
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import type { ApiClient } from '../api-client.js';
import { ConfirmButton, ErrorNote, Section } from '../components.js';
import { age } from '../format.js';
import { usePolled, useTick } from '../hooks.js';
import {
  EMPTY_GRANTS_FORM,
  describeLimit,
  describeSizeCaps,
  describeSpend,
  describeRepos,
  grantsForm,
  grantsFromForm,
  type GrantsForm,
} from '../key-grants.js';

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * `agentbox keys` for an admin key: every key with its grants; make one (its secret shown once),
 * change a key's grants, revoke one. `signedInWith` (this tab's key) marks the key in use.
 */
export function KeysView(props: { api: ApiClient; signedInWith: string }) {
  const { api } = props;
  const keys = usePolled(() => api.listKeys(), 5000, [api]);
  const now = useTick(1000);
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<CreatedApiKey | undefined>(undefined);
  const [editing, setEditing] = useState<string | undefined>(undefined);

  return (
    <Section
      title="API keys"
      actions={
        <button
          type="button"
          class="primary"
          data-testid="new-key"
          onClick={() => {
            setCreating(!creating);
            setCreated(undefined);
          }}
        >
          {creating ? 'Close' : 'New key'}
        </button>
      }
    >
      {creating ? (
        <CreateKeyForm
          api={api}
          onCreated={(key) => {
            setCreating(false);
            setCreated(key);
            void keys.reload();
          }}
        />
      ) : null}
      {created ? <NewKeySecret created={created} onDone={() => setCreated(undefined)} /> : null}
      <ErrorNote error={keys.error} />
      {keys.data ? (
        <table data-testid="keys-table">
          <thead>
            <tr>
              <th>Key</th>
              <th>Scope</th>
              <th>GitHub repos</th>
              <th>Max boxes</th>
              <th>Max tasks</th>
              <th>Box sizes in all</th>
              <th>Model spend</th>
              <th>Made</th>
              <th>Last used</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {keys.data.map((key) => (
              <KeyRow
                key={key.id}
                apiKey={key}
                now={now}
                mine={props.signedInWith.startsWith(key.prefix)}
                editing={editing === key.id}
                onEdit={() => setEditing(editing === key.id ? undefined : key.id)}
                api={api}
                reload={() => void keys.reload()}
                onSaved={() => {
                  setEditing(undefined);
                  void keys.reload();
                }}
              />
            ))}
          </tbody>
        </table>
      ) : keys.loading ? (
        <p class="muted">Loading…</p>
      ) : null}
    </Section>
  );
}

function KeyRow(props: {
  apiKey: ApiKey;
  now: number;
  mine: boolean;
  editing: boolean;
  onEdit: () => void;
  api: ApiClient;
  reload: () => void;
  onSaved: () => void;
}) {
  const key = props.apiKey;
  const revoked = key.revokedAt !== null;
  const [error, setError] = useState<unknown>(undefined);
  /** A change to the key: the list is reloaded after it, or the row says what went wrong. */
  const act = (change: () => Promise<unknown>) => async () => {
    setError(undefined);
    try {
      await change();
      props.reload();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <>
      <tr data-testid="key-row" data-key-id={key.id} data-state={revoked ? 'revoked' : 'active'}>
        <td>
          <code>{key.id}</code> {key.name}
          <div class="muted small">
            <code>{key.prefix}…</code>
            {props.mine ? ' (this tab’s key)' : ''}
            {revoked ? ` revoked ${age(iso(key.revokedAt!), props.now)} ago` : ''}
          </div>
        </td>
        <td>{key.scope}</td>
        <td data-testid="key-repos">{describeRepos(key)}</td>
        <td data-testid="key-max-boxes">{describeLimit(key.grants.maxBoxes)}</td>
        <td data-testid="key-max-tasks">{describeLimit(key.grants.maxTasks)}</td>
        <td data-testid="key-size-caps">{describeSizeCaps(key.grants)}</td>
        <td data-testid="key-spend" title={`since ${iso(key.spentSince)}`}>
          {describeSpend(key)}
        </td>
        <td title={iso(key.createdAt)}>{age(iso(key.createdAt), props.now)}</td>
        <td>
          {key.lastUsedAt === null ? <span class="muted">never</span> : age(iso(key.lastUsedAt), props.now)}
        </td>
        <td>
          {revoked ? null : (
            <div class="key-actions">
              <button type="button" data-testid="edit-grants" onClick={props.onEdit}>
                {props.editing ? 'Close' : 'Grants'}
              </button>
              <ConfirmButton
                label="Reset spend"
                confirmLabel="Confirm: count from $0"
                testId="reset-spend"
                onConfirm={act(() => props.api.resetKeySpend(key.id))}
              />
              <ConfirmButton
                label="Revoke"
                confirmLabel={props.mine ? 'Revoke (signs you out)' : 'Confirm revoke'}
                testId="revoke-key"
                onConfirm={act(() => props.api.revokeKey(key.id))}
              />
            </div>
          )}
          <ErrorNote error={error} />
        </td>
      </tr>
      {props.editing && !revoked ? (
        <tr>
          <td colSpan={10}>
            <GrantsEditor
              initial={grantsForm(key.grants)}
              admin={key.scope === 'admin'}
              submitLabel="Save grants"
              submitTestId="save-grants"
              onSubmit={async (form) => {
                await props.api.updateKeyGrants(key.id, grantsFromForm(form));
                props.onSaved();
              }}
            />
          </td>
        </tr>
      ) : null}
    </>
  );
}

/** The secret of a key just made: shown here once, never again (the daemon keeps only a hash). */
function NewKeySecret(props: { created: CreatedApiKey; onDone: () => void }) {
  return (
    <div class="notice new-key" data-testid="new-key-secret" data-key-id={props.created.id}>
      <p>
        Key <code>{props.created.id}</code> ({props.created.name}, {props.created.scope}). Copy its secret
        now: it is not shown again.
      </p>
      <pre data-testid="new-key-value">{props.created.key}</pre>
      <button type="button" data-testid="new-key-done" onClick={props.onDone}>
        Done
      </button>
    </div>
  );
}

function CreateKeyForm(props: { api: ApiClient; onCreated: (key: CreatedApiKey) => void }) {
  const [name, setName] = useState('');
  const [scope, setScope] = useState<'user' | 'admin'>('user');
  return (
    <GrantsEditor
      initial={EMPTY_GRANTS_FORM}
      admin={scope === 'admin'}
      submitLabel="Make key"
      submitTestId="create-key"
      testId="create-key-form"
      onSubmit={async (form) => {
        const grants = grantsFromForm(form);
        props.onCreated(
          await props.api.createKey({ scope, grants, ...(name.trim() === '' ? {} : { name: name.trim() }) }),
        );
      }}
    >
      <label>
        Name
        <input
          name="name"
          placeholder="api key"
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
        />
      </label>
      <label>
        Scope
        <select
          name="scope"
          value={scope}
          onChange={(e) => setScope(e.currentTarget.value === 'admin' ? 'admin' : 'user')}
        >
          <option value="user">user: its own boxes only</option>
          <option value="admin">admin: every box, keys, status</option>
        </select>
      </label>
    </GrantsEditor>
  );
}

/** The grants fields (repositories, limits), with any fields the caller puts first. */
function GrantsEditor(props: {
  initial: GrantsForm;
  admin: boolean;
  submitLabel: string;
  submitTestId: string;
  testId?: string;
  onSubmit: (form: GrantsForm) => Promise<void>;
  children?: ComponentChildren;
}) {
  const [form, setForm] = useState(props.initial);
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const field = (name: keyof GrantsForm) => ({
    name,
    value: form[name],
    onInput: (e: { currentTarget: HTMLInputElement | HTMLTextAreaElement }) =>
      setForm({ ...form, [name]: e.currentTarget.value }),
  });

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await props.onSubmit(form);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="form-grid" onSubmit={submit} data-testid={props.testId ?? 'grants-form'}>
      {props.children}
      <label>
        Max boxes
        <input type="text" inputMode="numeric" placeholder="no limit" {...field('maxBoxes')} />
      </label>
      <label>
        Max tasks
        <input type="text" inputMode="numeric" placeholder="no limit" {...field('maxTasks')} />
      </label>
      <label>
        Max memory (MiB, all live boxes)
        <input type="text" inputMode="numeric" placeholder="no limit" {...field('maxMemoryMib')} />
      </label>
      <label>
        Max disk (GiB, all live boxes)
        <input type="text" inputMode="numeric" placeholder="no limit" {...field('maxDiskGib')} />
      </label>
      <label>
        Max model spend (USD, in all)
        <input type="text" inputMode="decimal" placeholder="no cap" {...field('maxSpendUsd')} />
      </label>
      <label class="wide">
        GitHub repositories the host’s token may serve (owner/name, owner/* or *; one per line)
        <textarea
          rows={3}
          placeholder={props.admin ? 'an admin key needs none' : 'none: the token serves no repository'}
          {...field('repos')}
        />
      </label>
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy} data-testid={props.submitTestId}>
          {busy ? 'Saving…' : props.submitLabel}
        </button>
      </div>
      <ErrorNote error={error} />
    </form>
  );
}
