import type { Box } from '@agentbox/protocol';
import { useState } from 'preact/hooks';
import { ApiError, type ApiClient, type BoxAction } from '../api-client.js';
import { ConfirmButton, ErrorNote } from '../components.js';

export interface Capabilities {
  /** The daemon has `POST /v1/boxes/:id/pause|resume`. */
  pause: boolean;
  /** Called when the daemon answered 404 route_not_found to pause/resume after all. */
  pauseMissing: () => void;
}

/** Pause / resume (when the daemon has them) and kill, for one box. */
export function BoxActions(props: {
  api: ApiClient;
  box: Box;
  caps: Capabilities;
  onChanged: () => void;
  onKilled: () => void;
}) {
  const { api, box, caps } = props;
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const live = box.state !== 'deleted' && box.state !== 'stopped';

  async function act(action: BoxAction) {
    setBusy(true);
    setError(undefined);
    try {
      await api.boxAction(box.id, action);
      props.onChanged();
    } catch (err) {
      if (err instanceof ApiError && err.code === 'route_not_found') {
        caps.pauseMissing();
        setError(
          new ApiError({
            code: err.code,
            status: err.status,
            requestId: err.requestId,
            message: `this daemon cannot ${action} boxes`,
          }),
        );
      } else setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <div class="box-actions">
      {caps.pause && box.state === 'running' ? (
        <button type="button" disabled={busy} data-testid="pause-box" onClick={() => act('pause')}>
          Pause
        </button>
      ) : null}
      {caps.pause && (box.state === 'paused' || box.state === 'hibernated') ? (
        <button type="button" disabled={busy} data-testid="resume-box" onClick={() => act('resume')}>
          Resume
        </button>
      ) : null}
      {live ? (
        <ConfirmButton
          label="Kill"
          confirmLabel="Confirm kill"
          testId="kill-box"
          onConfirm={async () => {
            setError(undefined);
            try {
              await api.killBox(box.id);
              props.onKilled();
            } catch (err) {
              setError(err);
            }
          }}
        />
      ) : null}
      <ErrorNote error={error} />
    </div>
  );
}
