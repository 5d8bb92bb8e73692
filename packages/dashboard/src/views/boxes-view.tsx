import type { Box, CreateBoxRequest, Runtime } from '@agentbox/protocol';
import { useState } from 'preact/hooks';
import type { ApiClient } from '../api-client.js';
import { ErrorNote, Section, StateBadge } from '../components.js';
import { age } from '../format.js';
import { usePolled, useTick } from '../hooks.js';
import { linkTo } from '../router.js';
import { BoxActions, type Capabilities } from './box-actions.js';

const RUNTIMES = ['bash', 'python', 'node', 'claude-agent'] as const satisfies readonly Runtime[];

/** Every box this key may see, with its state, resources and age; create, pause, kill. */
export function BoxesView(props: { api: ApiClient; caps: Capabilities }) {
  const { api } = props;
  const boxes = usePolled(() => api.listBoxes(), 3000, [api]);
  const now = useTick(1000);
  const [creating, setCreating] = useState(false);

  return (
    <>
      <Section
        title="Boxes"
        actions={
          <>
            <button type="button" data-testid="refresh-boxes" onClick={() => void boxes.reload()}>
              Refresh
            </button>
            <button
              type="button"
              class="primary"
              data-testid="new-box"
              onClick={() => setCreating(!creating)}
            >
              {creating ? 'Close' : 'New box'}
            </button>
          </>
        }
      >
        {creating ? (
          <CreateBoxForm
            api={api}
            onCreated={() => {
              setCreating(false);
              void boxes.reload();
            }}
          />
        ) : null}
        <ErrorNote error={boxes.error} />
        {boxes.data ? (
          boxes.data.length === 0 ? (
            <p class="muted" data-testid="no-boxes">
              No boxes. Make one with “New box”, or run a task (it gets a fresh box).
            </p>
          ) : (
            <table data-testid="boxes-table">
              <thead>
                <tr>
                  <th>Box</th>
                  <th>State</th>
                  <th>Runtime</th>
                  <th>Memory</th>
                  <th>vCPUs</th>
                  <th>Age</th>
                  <th>User</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {boxes.data.map((box) => (
                  <BoxRow
                    key={box.id}
                    box={box}
                    now={now}
                    api={api}
                    caps={props.caps}
                    reload={() => void boxes.reload()}
                  />
                ))}
              </tbody>
            </table>
          )
        ) : boxes.loading ? (
          <p class="muted">Loading…</p>
        ) : null}
      </Section>
    </>
  );
}

function BoxRow(props: { box: Box; now: number; api: ApiClient; caps: Capabilities; reload: () => void }) {
  const { box } = props;
  return (
    <tr data-testid="box-row" data-box-id={box.id} data-state={box.state}>
      <td>
        <a {...linkTo(`/boxes/${box.id}`)}>
          <code>{box.id}</code>
        </a>
        {box.failureReason ? <div class="muted small">{box.failureReason}</div> : null}
        {box.heldFor === 'disk' ? (
          <div class="muted small" data-testid="box-held">
            held: the host is short of disk space
          </div>
        ) : null}
      </td>
      <td>
        <StateBadge state={box.state} />
      </td>
      <td>{box.runtime}</td>
      <td>{box.memoryMib} MiB</td>
      <td>{box.vcpus}</td>
      <td title={box.createdAt}>{age(box.createdAt, props.now)}</td>
      <td>{box.userId ?? <span class="muted">—</span>}</td>
      <td>
        <BoxActions
          api={props.api}
          box={box}
          caps={props.caps}
          onChanged={props.reload}
          onKilled={props.reload}
        />
      </td>
    </tr>
  );
}

function numberOrUndefined(value: string): number | undefined {
  return value.trim() === '' ? undefined : Number(value);
}

/** `POST /v1/boxes`: runtime, size, user, time to live. Blank fields take the daemon's defaults. */
function CreateBoxForm(props: { api: ApiClient; onCreated: (box: Box) => void }) {
  const [runtime, setRuntime] = useState<Runtime>('bash');
  const [memory, setMemory] = useState('');
  const [vcpus, setVcpus] = useState('');
  const [userId, setUserId] = useState('');
  const [ttl, setTtl] = useState('');
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    const body: CreateBoxRequest = { runtime };
    const memoryMib = numberOrUndefined(memory);
    const cpus = numberOrUndefined(vcpus);
    const ttlSeconds = numberOrUndefined(ttl);
    if (memoryMib !== undefined) body.memoryMib = memoryMib;
    if (cpus !== undefined) body.vcpus = cpus;
    if (ttlSeconds !== undefined) body.ttlSeconds = ttlSeconds;
    if (userId.trim() !== '') body.userId = userId.trim();
    setBusy(true);
    setError(undefined);
    try {
      props.onCreated(await props.api.createBox(body));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="form-grid" onSubmit={submit} data-testid="create-box-form">
      <label>
        Runtime
        <select name="runtime" value={runtime} onChange={(e) => setRuntime(e.currentTarget.value as Runtime)}>
          {RUNTIMES.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
      </label>
      <label>
        Memory (MiB)
        <input
          name="memoryMib"
          type="number"
          min={128}
          placeholder="default"
          value={memory}
          onInput={(e) => setMemory(e.currentTarget.value)}
        />
      </label>
      <label>
        vCPUs
        <input
          name="vcpus"
          type="number"
          min={1}
          placeholder="default"
          value={vcpus}
          onInput={(e) => setVcpus(e.currentTarget.value)}
        />
      </label>
      <label>
        User id
        <input
          name="userId"
          placeholder="optional"
          value={userId}
          onInput={(e) => setUserId(e.currentTarget.value)}
        />
      </label>
      <label>
        Time to live (s)
        <input
          name="ttlSeconds"
          type="number"
          min={1}
          placeholder="none"
          value={ttl}
          onInput={(e) => setTtl(e.currentTarget.value)}
        />
      </label>
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy} data-testid="create-box">
          {busy ? 'Booting…' : 'Create box'}
        </button>
      </div>
      <ErrorNote error={error} />
    </form>
  );
}
