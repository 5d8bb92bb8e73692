import type { AgentKind, Box, Task } from '@agentbox/protocol';
import { useRef, useState } from 'preact/hooks';
import type { ApiClient, NewTask } from '../api-client.js';
import { ErrorNote, Section, StateBadge } from '../components.js';
import { age } from '../format.js';
import { usePolled, useTick } from '../hooks.js';
import { linkTo, navigate } from '../router.js';

const AGENTS = ['claude', 'codex', 'opencode', 'shell'] as const satisfies readonly AgentKind[];
const FRESH = '';
const USER = '@user';

/** Tasks, newest first; the form queues a new one. `boxId` preselects where it runs. */
export function TasksView(props: { api: ApiClient; boxId: string | undefined }) {
  const { api } = props;
  // Pages shown: each poll walks them from the newest, so what "Load more" added stays current.
  // A ref, not a dep of usePolled: a new dep would blank the table while the longer list loads.
  const pages = useRef(1);
  const tasks = usePolled(() => api.listTaskPages(pages.current), 3000, [api]);
  const [loadingMore, setLoadingMore] = useState(false);
  const now = useTick(1000);
  const [creating, setCreating] = useState(props.boxId !== undefined);

  return (
    <Section
      title="Tasks"
      actions={
        <>
          <button type="button" onClick={() => void tasks.reload()}>
            Refresh
          </button>
          <button type="button" class="primary" data-testid="new-task" onClick={() => setCreating(!creating)}>
            {creating ? 'Close' : 'New task'}
          </button>
        </>
      }
    >
      {creating ? <CreateTaskForm api={api} boxId={props.boxId} /> : null}
      <ErrorNote error={tasks.error} />
      {tasks.data ? (
        <>
          <TaskTable tasks={tasks.data.tasks} now={now} />
          {tasks.data.more ? (
            <button
              type="button"
              data-testid="more-tasks"
              disabled={loadingMore}
              onClick={() => {
                pages.current += 1;
                setLoadingMore(true);
                void tasks.reload().finally(() => setLoadingMore(false));
              }}
            >
              {loadingMore ? 'Loading…' : 'Load more'}
            </button>
          ) : null}
        </>
      ) : tasks.loading ? (
        <p class="muted">Loading…</p>
      ) : null}
    </Section>
  );
}

export function TaskTable({ tasks, now }: { tasks: Task[]; now: number }) {
  if (tasks.length === 0) return <p class="muted">No tasks.</p>;
  return (
    <table data-testid="tasks-table">
      <thead>
        <tr>
          <th>Task</th>
          <th>State</th>
          <th>Agent</th>
          <th>Prompt</th>
          <th>Box</th>
          <th>Age</th>
          <th>Events</th>
        </tr>
      </thead>
      <tbody>
        {tasks.map((task) => (
          <tr key={task.id} data-testid="task-row" data-task-id={task.id}>
            <td>
              <a {...linkTo(`/tasks/${task.id}`)}>
                <code>{task.id}</code>
              </a>
            </td>
            <td>
              <StateBadge state={task.state} />
              {task.queuePosition ? <span class="muted small"> #{task.queuePosition}</span> : null}
            </td>
            <td>{task.agent}</td>
            <td class="prompt-cell" title={task.spec.prompt}>
              {task.spec.prompt}
            </td>
            <td>
              {task.boxId ? (
                <a {...linkTo(`/boxes/${task.boxId}`)}>
                  <code>{task.boxId}</code>
                </a>
              ) : (
                <span class="muted">—</span>
              )}
            </td>
            <td title={task.createdAt}>{age(task.createdAt, now)}</td>
            <td>{task.eventCount}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Running or paused boxes a task may be sent to. */
const usable = (box: Box) => box.state === 'running' || box.state === 'paused' || box.state === 'hibernated';

function CreateTaskForm(props: { api: ApiClient; boxId: string | undefined }) {
  const { api } = props;
  const boxes = usePolled(() => api.listBoxes(), undefined, [api]);
  const [agent, setAgent] = useState<AgentKind>(props.boxId ? 'shell' : 'claude');
  const [prompt, setPrompt] = useState('');
  const [where, setWhere] = useState(props.boxId ?? FRESH);
  const [userId, setUserId] = useState('');
  const [timeout, setTimeoutSeconds] = useState('');
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    const body: NewTask = { agent, prompt };
    if (where === USER) body.userId = userId.trim();
    else if (where !== FRESH) body.boxId = where;
    if (timeout.trim() !== '') body.timeoutSeconds = Number(timeout);
    setBusy(true);
    setError(undefined);
    try {
      const task = await api.createTask(body);
      navigate(`/tasks/${task.id}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }

  const choices = (boxes.data ?? []).filter(usable);
  return (
    <form class="form-grid" onSubmit={submit} data-testid="create-task-form">
      <label>
        Agent
        <select name="agent" value={agent} onChange={(e) => setAgent(e.currentTarget.value as AgentKind)}>
          {AGENTS.map((a) => (
            <option key={a} value={a}>
              {a}
            </option>
          ))}
        </select>
      </label>
      <label>
        Runs in
        <select name="where" value={where} onChange={(e) => setWhere(e.currentTarget.value)}>
          <option value={FRESH}>a fresh box (deleted when the task ends)</option>
          {choices.map((b) => (
            <option key={b.id} value={b.id}>
              box {b.id} ({b.state}
              {b.userId ? `, user ${b.userId}` : ''})
            </option>
          ))}
          {props.boxId && !choices.some((b) => b.id === props.boxId) ? (
            <option value={props.boxId}>box {props.boxId}</option>
          ) : null}
          <option value={USER}>a user’s persistent box…</option>
        </select>
      </label>
      {where === USER ? (
        <label>
          User id
          <input name="userId" required value={userId} onInput={(e) => setUserId(e.currentTarget.value)} />
        </label>
      ) : null}
      <label>
        Timeout (s)
        <input
          name="timeoutSeconds"
          type="number"
          min={1}
          placeholder="300"
          value={timeout}
          onInput={(e) => setTimeoutSeconds(e.currentTarget.value)}
        />
      </label>
      <label class="wide">
        {agent === 'shell' ? 'Script (bash)' : 'Prompt'}
        <textarea
          name="prompt"
          rows={4}
          required
          value={prompt}
          placeholder={
            agent === 'shell' ? 'for i in 1 2 3; do echo tick $i; sleep 1; done' : 'What should the agent do?'
          }
          onInput={(e) => setPrompt(e.currentTarget.value)}
        />
      </label>
      <div class="form-actions">
        <button
          type="submit"
          class="primary"
          disabled={busy || prompt.trim() === ''}
          data-testid="start-task"
        >
          {busy ? 'Queueing…' : 'Start task'}
        </button>
      </div>
      <ErrorNote error={error} />
    </form>
  );
}
