import type { Task, TaskEvent } from '@agentbox/protocol';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { ApiClient } from '../api-client.js';
import { ConfirmButton, ErrorNote, Section, StateBadge } from '../components.js';
import { clock, show } from '../format.js';
import { usePolled } from '../hooks.js';
import { linkTo, navigate } from '../router.js';
import { isTerminal, type StreamState } from '../follow-task.js';
import { useTaskEvents } from '../task-events.js';

/** One task: its spec and outcome, its events as they arrive; cancel it, or delete it once ended. */
export function TaskDetailView(props: { api: ApiClient; id: string }) {
  const { api, id } = props;
  const task = usePolled(() => api.getTask(id), 2000, [api, id]);
  const { events, stream, error } = useTaskEvents(api, id, () => void task.reload());
  const [cancelError, setCancelError] = useState<unknown>(undefined);

  return (
    <>
      <p class="crumbs">
        <a {...linkTo('/tasks')}>Tasks</a> / <code>{id}</code>
      </p>
      <ErrorNote error={task.error} />
      {task.data ? (
        <Section
          title={`Task ${task.data.id}`}
          actions={
            isTerminal(task.data.state) ? (
              <ConfirmButton
                label="Delete"
                confirmLabel="Delete it and its events"
                testId="delete-task"
                onConfirm={async () => {
                  setCancelError(undefined);
                  try {
                    await api.deleteTask(id);
                    navigate('/tasks');
                  } catch (err) {
                    setCancelError(err);
                  }
                }}
              />
            ) : (
              <button
                type="button"
                class="danger"
                data-testid="cancel-task"
                onClick={async () => {
                  setCancelError(undefined);
                  try {
                    await api.cancelTask(id);
                    await task.reload();
                  } catch (err) {
                    setCancelError(err);
                  }
                }}
              >
                Cancel
              </button>
            )
          }
        >
          <ErrorNote error={cancelError} />
          <TaskFacts task={task.data} />
        </Section>
      ) : null}
      <Section title="Events" actions={<StreamBadge stream={stream} count={events.length} />}>
        <ErrorNote error={error} />
        <EventList events={events} />
      </Section>
    </>
  );
}

function StreamBadge({ stream, count }: { stream: StreamState; count: number }) {
  return (
    <span class={`badge stream-${stream}`} data-testid="stream-state" data-stream={stream}>
      {stream === 'live' ? '● live' : stream} · {count} events
    </span>
  );
}

function TaskFacts({ task }: { task: Task }) {
  const result = task.result;
  return (
    <dl class="facts" data-testid="task-facts">
      <div>
        <dt>State</dt>
        <dd data-testid="task-state" data-state={task.state}>
          <StateBadge state={task.state} />
          {task.queuePosition ? ` queue position ${task.queuePosition}` : ''}
        </dd>
      </div>
      <div>
        <dt>Agent</dt>
        <dd>
          {task.agent}
          {task.spec.model ? ` · ${task.spec.model}` : ''} · effort {task.spec.effort}
        </dd>
      </div>
      <div>
        <dt>Box</dt>
        <dd>
          {task.boxId ? (
            <a {...linkTo(`/boxes/${task.boxId}`)}>
              <code>{task.boxId}</code>
            </a>
          ) : (
            '—'
          )}
          {task.userId ? ` · user ${task.userId}` : ''}
        </dd>
      </div>
      <div>
        <dt>Times</dt>
        <dd>
          created {clock(task.createdAt)}
          {task.startedAt ? ` · started ${clock(task.startedAt)}` : ''}
          {task.finishedAt ? ` · finished ${clock(task.finishedAt)}` : ''}
        </dd>
      </div>
      {task.spec.gitRepoUrl ? (
        <div>
          <dt>Repository</dt>
          <dd>
            <code>{task.spec.gitRepoUrl}</code>
          </dd>
        </div>
      ) : null}
      {result ? (
        <div>
          <dt>Result</dt>
          <dd>
            {[
              result.exitCode === null ? null : `exit ${result.exitCode}`,
              result.numTurns === null ? null : `${result.numTurns} turns`,
              result.meteredCostUsd === undefined
                ? null
                : `$${result.meteredCostUsd.toFixed(4)} metered on the host`,
              result.costUsd === null ? null : `$${result.costUsd.toFixed(4)} as the agent reported`,
              result.sessionId ? `session ${result.sessionId}` : null,
            ]
              .filter(Boolean)
              .join(' · ') || '—'}
          </dd>
        </div>
      ) : null}
      {task.error ? (
        <div>
          <dt>Error</dt>
          <dd class="error-text">
            <code>{task.error.code}</code> {task.error.message}
          </dd>
        </div>
      ) : null}
      <div class="wide">
        <dt>Prompt</dt>
        <dd>
          <pre>{task.spec.prompt}</pre>
        </dd>
      </div>
    </dl>
  );
}

/** The events, oldest first; keeps the view at the bottom while the reader is there. */
function EventList({ events }: { events: TaskEvent[] }) {
  const list = useRef<HTMLOListElement>(null);
  const stick = useRef(true);
  useEffect(() => {
    const onScroll = () => {
      const el = document.scrollingElement ?? document.documentElement;
      stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
    };
    window.addEventListener('scroll', onScroll, { passive: true });
    return () => window.removeEventListener('scroll', onScroll);
  }, []);
  useEffect(() => {
    if (stick.current) list.current?.lastElementChild?.scrollIntoView({ block: 'end' });
  }, [events.length]);
  if (events.length === 0) return <p class="muted">No events yet.</p>;
  return (
    <ol class="events" ref={list} data-testid="events">
      {events.map((event) => (
        <EventItem key={event.seq} event={event} />
      ))}
    </ol>
  );
}

interface ToolUse {
  id?: string;
  name?: string;
  input?: unknown;
}
interface ToolResult {
  toolUseId?: string;
  content?: unknown;
  isError?: boolean;
}
interface EventError {
  code?: string;
  message?: string;
}

function EventBody({ event }: { event: TaskEvent }) {
  const c = event.content;
  switch (event.type) {
    case 'text':
      return <pre class="text">{show(c)}</pre>;
    case 'completion':
      return <pre class="text">{show(c)}</pre>;
    case 'tool_use': {
      const t = (c ?? {}) as ToolUse;
      return (
        <details open>
          <summary>
            <strong>{t.name ?? 'tool'}</strong> <span class="muted small">{t.id}</span>
          </summary>
          <pre>{show(t.input)}</pre>
        </details>
      );
    }
    case 'tool_result': {
      const r = (c ?? {}) as ToolResult;
      return (
        <details>
          <summary>
            {r.isError ? <span class="badge decision-deny">error</span> : 'result'}{' '}
            <span class="muted small">{r.toolUseId}</span>
          </summary>
          <pre>{show(r.content)}</pre>
        </details>
      );
    }
    case 'error': {
      const e = (c ?? {}) as EventError;
      return (
        <p class="error-text">
          <code>{e.code ?? 'error'}</code> {e.message ?? show(c)}
        </p>
      );
    }
    case 'status': {
      const { state, ...rest } = (c ?? {}) as { state?: string } & Record<string, unknown>;
      const more = Object.entries(rest)
        .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' · ');
      return (
        <p>
          {state ? <StateBadge state={state} /> : null} <span class="muted">{more}</span>
        </p>
      );
    }
  }
}

function EventItem({ event }: { event: TaskEvent }) {
  return (
    <li
      class={`event event-${event.type}`}
      data-testid="task-event"
      data-type={event.type}
      data-seq={event.seq}
    >
      <div class="event-head">
        <span class="seq">#{event.seq}</span>
        <span class={`badge type-${event.type}`}>{event.type.replace('_', ' ')}</span>
        <time dateTime={event.ts}>{clock(event.ts)}</time>
        {event.truncated ? (
          <span class="muted small" title="The host keeps at most 256 KiB of an event's raw line and content">
            cut
          </span>
        ) : null}
      </div>
      <div class="event-body">
        <EventBody event={event} />
        {event.raw !== undefined && event.raw !== event.content ? (
          <details class="raw">
            <summary class="muted small">raw</summary>
            <pre>{event.raw}</pre>
          </details>
        ) : null}
      </div>
    </li>
  );
}
