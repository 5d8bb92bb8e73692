import type { Box } from '@agentbox/protocol';
import type { ComponentChildren } from 'preact';
import { useRef } from 'preact/hooks';
import type { ApiClient, EgressRecord } from '../api-client.js';
import { ErrorNote, Section, StateBadge } from '../components.js';
import { age, bytes, clock } from '../format.js';
import { usePolled, useTick } from '../hooks.js';
import { linkTo, navigate } from '../router.js';
import { BoxActions, type Capabilities } from './box-actions.js';
import { CommandsPanel, FilesPanel, ProcessesPanel } from './box-files.js';
import { TaskTable } from './tasks-view.js';
import { appendNewer } from '../seq-log.js';

/** A box whose guest can be asked for files and processes (a paused or hibernated one wakes). */
const reachable = (box: Box) =>
  box.state === 'running' || box.state === 'paused' || box.state === 'hibernated';

/** One box: its facts, actions, files, processes, egress audit and tasks. */
export function BoxDetailView(props: { api: ApiClient; caps: Capabilities; id: string }) {
  const { api, id } = props;
  const box = usePolled(() => api.getBox(id), 3000, [api, id]);
  const tasks = usePolled(() => api.listTasks({ boxId: id }), 3000, [api, id]);
  const now = useTick(1000);

  return (
    <>
      <p class="crumbs">
        <a {...linkTo('/boxes')}>Boxes</a> / <code>{id}</code>
      </p>
      <ErrorNote error={box.error} />
      {box.data ? (
        <Section
          title={`Box ${box.data.id}`}
          actions={
            <>
              <a
                class="button"
                {...linkTo(`/tasks?boxId=${encodeURIComponent(id)}`)}
                data-testid="task-in-box"
              >
                Run a task here
              </a>
              <BoxActions
                api={api}
                box={box.data}
                caps={props.caps}
                onChanged={() => void box.reload()}
                onKilled={() => navigate('/boxes')}
              />
            </>
          }
        >
          <BoxFacts box={box.data} now={now} />
        </Section>
      ) : null}
      {box.data && reachable(box.data) ? (
        <>
          <FilesPanel api={api} boxId={id} />
          <ProcessesPanel api={api} boxId={id} />
        </>
      ) : null}
      {box.data && box.data.state !== 'deleted' ? <CommandsPanel api={api} boxId={id} now={now} /> : null}
      <EgressAudit api={api} boxId={id} />
      <Section title="Tasks in this box">
        <ErrorNote error={tasks.error} />
        {tasks.data ? <TaskTable tasks={tasks.data} now={now} /> : null}
      </Section>
    </>
  );
}

function BoxFacts({ box, now }: { box: Box; now: number }) {
  const rows: [string, ComponentChildren][] = [
    ['State', <StateBadge state={box.state} />],
    ['Runtime', box.runtime],
    ['Resources', `${box.memoryMib} MiB · ${box.vcpus} vCPU · ${box.diskGib} GiB disk`],
    ['Age', `${age(box.createdAt, now)} (created ${new Date(box.createdAt).toLocaleString()})`],
    ['User', box.userId ?? '—'],
    ['Expires', box.expiresAt ? new Date(box.expiresAt).toLocaleString() : 'never'],
    ['Boot', box.bootMs === null ? '—' : `${box.bootMs} ms${box.startMode ? ` (${box.startMode})` : ''}`],
    ['VM pid', box.pid ?? '—'],
    [
      'Labels',
      Object.entries(box.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ') || '—',
    ],
    [
      'Egress',
      box.egress === null
        ? 'disabled'
        : [
            ...(box.egress.presets ?? []).map((p) => `preset ${p}`),
            ...(box.egress.allowDomains ?? []),
            ...(box.egress.repos ?? []).map((r) => `repo ${r}`),
          ].join(', ') || 'nothing allowed',
    ],
  ];
  if (box.failureReason) rows.push(['Failure', box.failureReason]);
  if (box.heldFor === 'disk')
    rows.push(['Held', 'paused while the host is short of disk space; it runs again once space is freed']);
  return (
    <dl class="facts" data-testid="box-facts">
      {rows.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

/** `GET /v1/boxes/:id/egress`, fetched incrementally (`after` the last seq), newest first. */
function EgressAudit(props: { api: ApiClient; boxId: string }) {
  const seen = useRef<{ boxId: string; records: EgressRecord[] }>({ boxId: props.boxId, records: [] });
  const audit = usePolled(
    async () => {
      if (seen.current.boxId !== props.boxId) seen.current = { boxId: props.boxId, records: [] };
      const records = seen.current.records;
      for (;;) {
        const page = await props.api.egress(props.boxId, records.at(-1)?.seq ?? 0);
        appendNewer(records, page.records);
        if (page.next === null || page.records.length === 0) break;
      }
      return [...records].reverse();
    },
    5000,
    [props.api, props.boxId],
  );
  const records = audit.data ?? [];
  const denied = records.filter((r) => r.decision !== 'allow').length;
  return (
    <Section
      title="Egress audit"
      actions={
        <button type="button" onClick={() => void audit.reload()}>
          Refresh
        </button>
      }
    >
      <ErrorNote error={audit.error} />
      {audit.data && records.length === 0 ? (
        <p class="muted" data-testid="egress-empty">
          No connections yet. Every connection the box makes is decided by the gateway and listed here.
        </p>
      ) : null}
      {records.length > 0 ? (
        <>
          <p class="muted">
            {records.length} connections, {denied} refused or failed.
          </p>
          <table data-testid="egress-table">
            <thead>
              <tr>
                <th>#</th>
                <th>Time</th>
                <th>Decision</th>
                <th>Destination</th>
                <th>Request</th>
                <th>Reason</th>
                <th>Up / down</th>
              </tr>
            </thead>
            <tbody>
              {records.map((r) => (
                <tr key={r.seq} class={`decision-${r.decision}`}>
                  <td>{r.seq}</td>
                  <td title={r.ts}>{clock(r.ts)}</td>
                  <td>
                    <span class={`badge decision-${r.decision}`}>{r.decision}</span> <code>{r.code}</code>
                    {r.placeholderLeak ? <span class="badge decision-deny">placeholder leak</span> : null}
                  </td>
                  <td>
                    <code>
                      {r.host}:{r.port}
                    </code>
                  </td>
                  <td>
                    {r.method ?? ''} {r.path ?? ''}
                    {r.injected?.length ? (
                      <div class="muted small">injected {r.injected.join(', ')}</div>
                    ) : null}
                  </td>
                  <td>{r.reason}</td>
                  <td>
                    {bytes(r.bytesUp)} / {bytes(r.bytesDown)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : null}
    </Section>
  );
}
