import type { EntryInfo, FileListResponse, ProcessInfo } from '@agentbox/protocol';
import { useState } from 'preact/hooks';
import type { ApiClient } from '../api-client.js';
import type { CommandOutputText } from '../command-output.js';
import { crumbs, joinPath, opensAsDirectory, parentOf, sortEntries, WORKSPACE } from '../box-paths.js';
import { ConfirmButton, ErrorNote, Section, StateBadge } from '../components.js';
import { age, bytes } from '../format.js';
import { usePolled } from '../hooks.js';

/*
 * Files and processes are read from the guest on request only, never polled: a look at a box's
 * page must not wake a hibernated box or keep an idle one from pausing.
 */

/** Browse the box's files from /workspace: open directories, download, upload here, delete. */
export function FilesPanel(props: { api: ApiClient; boxId: string }) {
  const { api, boxId } = props;
  const [listing, setListing] = useState<FileListResponse | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  async function open(path: string) {
    setBusy(true);
    setError(undefined);
    try {
      setListing(await api.listDir(boxId, path));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  async function act(work: () => Promise<unknown>) {
    setError(undefined);
    try {
      await work();
      if (listing) await open(listing.path);
    } catch (err) {
      setError(err);
    }
  }

  async function download(entry: EntryInfo) {
    await act(async () => {
      const blob = await api.download(boxId, entry.path);
      // The key goes in a header, never a URL: fetch the bytes, then hand the browser a blob URL.
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = entry.name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    });
  }

  async function upload(files: FileList | null, input: HTMLInputElement) {
    const dir = listing?.path;
    if (!files || dir === undefined) return;
    await act(async () => {
      for (const file of Array.from(files)) await api.upload(boxId, joinPath(dir, file.name), file);
    });
    input.value = '';
  }

  return (
    <Section
      title="Files"
      actions={
        listing ? (
          <>
            <label class="button" data-testid="upload-label">
              Upload here
              <input
                type="file"
                multiple
                hidden
                data-testid="upload-file"
                onChange={(e) => void upload(e.currentTarget.files, e.currentTarget)}
              />
            </label>
            <button type="button" data-testid="refresh-files" onClick={() => void open(listing.path)}>
              Refresh
            </button>
          </>
        ) : (
          <button
            type="button"
            data-testid="browse-files"
            disabled={busy}
            onClick={() => void open(WORKSPACE)}
          >
            {busy ? 'Reading…' : 'Browse files'}
          </button>
        )
      }
    >
      <ErrorNote error={error} />
      {listing ? (
        <Listing listing={listing} open={open} download={download} act={act} api={api} boxId={boxId} />
      ) : null}
    </Section>
  );
}

function Listing(props: {
  listing: FileListResponse;
  open: (path: string) => Promise<void>;
  download: (entry: EntryInfo) => Promise<void>;
  act: (work: () => Promise<unknown>) => Promise<void>;
  api: ApiClient;
  boxId: string;
}) {
  const { listing } = props;
  const now = Date.now();
  return (
    <>
      <p class="crumbs" data-testid="files-path" data-path={listing.path}>
        {crumbs(listing.path).map((c, i) => (
          <span key={c.path}>
            {i > 1 ? ' / ' : ' '}
            <a
              href="#"
              onClick={(e) => {
                e.preventDefault();
                void props.open(c.path);
              }}
            >
              {c.name}
            </a>
          </span>
        ))}
      </p>
      <table data-testid="files-table">
        <thead>
          <tr>
            <th>Name</th>
            <th>Size</th>
            <th>Modified</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {listing.path === '/' ? null : (
            <tr>
              <td colSpan={4}>
                <a
                  href="#"
                  data-testid="files-up"
                  onClick={(e) => {
                    e.preventDefault();
                    void props.open(parentOf(listing.path));
                  }}
                >
                  ..
                </a>
              </td>
            </tr>
          )}
          {sortEntries(listing.entries).map((entry) => (
            <tr key={entry.path} data-testid="file-row" data-name={entry.name} data-type={entry.type}>
              <td>
                <a
                  href="#"
                  onClick={(e) => {
                    e.preventDefault();
                    void (opensAsDirectory(entry) ? props.open(entry.path) : props.download(entry));
                  }}
                >
                  {entry.name}
                  {opensAsDirectory(entry) ? '/' : ''}
                </a>
                {entry.type === 'symlink' ? <span class="muted small"> (link)</span> : null}
              </td>
              <td>{entry.type === 'file' ? bytes(entry.size) : <span class="muted">—</span>}</td>
              <td title={new Date(entry.modifiedMs).toISOString()}>
                {age(new Date(entry.modifiedMs).toISOString(), now)}
              </td>
              <td>
                <ConfirmButton
                  label="Delete"
                  confirmLabel={entry.type === 'directory' ? 'Delete all of it' : 'Confirm delete'}
                  testId="delete-file"
                  onConfirm={() => props.act(() => props.api.removeFile(props.boxId, entry.path))}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {listing.omitted > 0 ? (
        <p class="muted small">{listing.omitted} more entries not shown (the listing is capped).</p>
      ) : null}
      {listing.entries.length === 0 ? <p class="muted">Empty directory.</p> : null}
    </>
  );
}

/** The box's processes, on request; kill one (SIGKILL, asks once more). */
export function ProcessesPanel(props: { api: ApiClient; boxId: string }) {
  const { api, boxId } = props;
  const [processes, setProcesses] = useState<ProcessInfo[] | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  async function load() {
    setBusy(true);
    setError(undefined);
    try {
      setProcesses(await api.listProcesses(boxId));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Section
      title="Processes"
      actions={
        <button type="button" data-testid="list-processes" disabled={busy} onClick={() => void load()}>
          {busy ? 'Reading…' : processes ? 'Refresh' : 'List processes'}
        </button>
      }
    >
      <ErrorNote error={error} />
      {processes ? (
        <table data-testid="processes-table">
          <thead>
            <tr>
              <th>PID</th>
              <th>User</th>
              <th>State</th>
              <th>Memory</th>
              <th>Command</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {processes.map((p) => (
              <tr key={p.pid} data-testid="process-row" data-pid={p.pid}>
                <td>{p.pid}</td>
                <td>{p.user}</td>
                <td>{p.state}</td>
                <td>{bytes(p.rssBytes)}</td>
                <td class="prompt-cell" title={p.command}>
                  {p.command}
                </td>
                <td>
                  <ConfirmButton
                    label="Kill"
                    confirmLabel="Confirm kill"
                    testId="kill-process"
                    onConfirm={async () => {
                      setError(undefined);
                      try {
                        await api.killProcess(boxId, p.pid);
                      } catch (err) {
                        setError(err);
                      }
                      await load();
                    }}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </Section>
  );
}

/**
 * The box's background commands (listed from the daemon's store, so polling wakes nothing); a
 * command's output is read on request; delete ends one that runs (asks once more).
 */
export function CommandsPanel(props: { api: ApiClient; boxId: string; now: number }) {
  const { api, boxId } = props;
  const commands = usePolled(() => api.listCommands(boxId), 3000, [api, boxId]);
  const [shown, setShown] = useState<{ id: string; output: CommandOutputText } | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);

  async function show(commandId: string) {
    setError(undefined);
    try {
      setShown({ id: commandId, output: await api.commandOutput(boxId, commandId) });
    } catch (err) {
      setError(err);
    }
  }

  const list = commands.data ?? [];
  return (
    <Section title="Background commands">
      <ErrorNote error={commands.error ?? error} />
      {commands.data && list.length === 0 ? (
        <p class="muted">
          None. <code>agentbox box exec --background {boxId} -- CMD</code> or{' '}
          <code>POST /v1/boxes/{boxId}/commands</code> starts one.
        </p>
      ) : null}
      {list.length > 0 ? (
        <table data-testid="commands-table">
          <thead>
            <tr>
              <th>Command</th>
              <th>State</th>
              <th>Exit</th>
              <th>Started</th>
              <th>Runs</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.map((c) => (
              <tr key={c.id} data-testid="command-row" data-command={c.id}>
                <td>
                  <code>{c.id}</code>
                </td>
                <td>
                  <StateBadge state={c.state} />
                </td>
                <td>{c.state === 'exited' ? (c.signal ?? c.exitCode) : '—'}</td>
                <td>{age(c.startedAt, props.now)} ago</td>
                <td class="prompt-cell" title={c.argv.join(' ')}>
                  {c.argv.join(' ')}
                </td>
                <td>
                  <button type="button" data-testid="command-output" onClick={() => void show(c.id)}>
                    Output
                  </button>
                  <ConfirmButton
                    label="Delete"
                    confirmLabel="Confirm delete"
                    testId="delete-command"
                    onConfirm={async () => {
                      setError(undefined);
                      try {
                        await api.deleteCommand(boxId, c.id);
                        if (shown?.id === c.id) setShown(undefined);
                      } catch (err) {
                        setError(err);
                      }
                      await commands.reload();
                    }}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {shown ? (
        <div data-testid="command-output-view">
          <p class="small">
            Output of <code>{shown.id}</code>
            {shown.output.exit
              ? ` (exited ${shown.output.exit.signal ?? shown.output.exit.exitCode})`
              : shown.output.error
                ? ` (${shown.output.error.message})`
                : ' so far (still running)'}
          </p>
          <pre data-testid="command-stdout">{shown.output.stdout}</pre>
          {shown.output.stderr ? (
            <pre class="stderr" data-testid="command-stderr">
              {shown.output.stderr}
            </pre>
          ) : null}
        </div>
      ) : null}
    </Section>
  );
}
