import { randomUUID } from 'node:crypto';
import type { ContextMessage } from '@agentbox/protocol';
import { joinPath } from '../shared.js';

/**
 * Context replay for Claude Code: the prior messages written as a session transcript that
 * `claude --resume <id>` loads, so they reach the model as real earlier turns. The format is the
 * CLI's own (verified with 2.1.330): one JSON entry per line, chained by `parentUuid`, in
 * `~/.claude/projects/<cwd with every non-alphanumeric character as ->/<session id>.jsonl`.
 */

/** Claude Code's project directory name for a cwd; it shortens names past this length with a hash. */
const MAX_PROJECT_DIR_NAME = 200;

export function claudeProjectDirName(cwd: string): string | undefined {
  const name = cwd.replace(/[^A-Za-z0-9]/g, '-');
  return name.length <= MAX_PROJECT_DIR_NAME ? name : undefined;
}

/** Where the session file of `sessionId` lives, or undefined when the cwd is too long to name it here. */
export function claudeSessionPath(home: string, cwd: string, sessionId: string): string | undefined {
  const dir = claudeProjectDirName(cwd);
  return dir === undefined ? undefined : joinPath(home, '.claude', 'projects', dir, `${sessionId}.jsonl`);
}

/** The CLI version the transcript claims; the pinned one it was verified with. */
export const CLAUDE_TRANSCRIPT_VERSION = '2.1.330';

const REPLAY_NOTE =
  '<system-reminder>\nThe earlier turns of this conversation were replayed by agentbox from another session; the tools they mention may not have run in this workspace.\n</system-reminder>';

export interface ReplayOptions {
  sessionId: string;
  cwd: string;
  /** Alternating turns starting with the user (see foldContext). */
  turns: readonly ContextMessage[];
  now?: Date;
  newId?: () => string;
}

/** The JSONL transcript: the turns in order, with one system note after the first user turn. */
export function replayTranscript(options: ReplayOptions): string {
  const newId = options.newId ?? randomUUID;
  const start = (options.now ?? new Date()).getTime();
  const common = {
    isSidechain: false,
    sessionId: options.sessionId,
    cwd: options.cwd,
    userType: 'external',
    version: CLAUDE_TRANSCRIPT_VERSION,
  };
  const lines: string[] = [];
  let parentUuid: string | null = null;
  const push = (entry: Record<string, unknown>) => {
    const uuid = newId();
    const timestamp = new Date(start + lines.length).toISOString();
    lines.push(JSON.stringify({ parentUuid, ...common, ...entry, uuid, timestamp }));
    parentUuid = uuid;
  };
  options.turns.forEach((turn, index) => {
    if (turn.role === 'user') {
      push({ type: 'user', message: { role: 'user', content: turn.content } });
      if (index === 0) {
        // Without an attachment here the CLI sends an empty system message after the first turn.
        push({
          type: 'attachment',
          attachment: { type: 'date', date: new Date(start).toISOString().slice(0, 10) },
          rendered: [{ content: REPLAY_NOTE }],
          renderedRole: 'system',
        });
      }
    } else {
      push({
        type: 'assistant',
        message: {
          id: `msg_agentbox_replay_${index}`,
          type: 'message',
          role: 'assistant',
          model: 'agentbox-replay',
          content: [{ type: 'text', text: turn.content }],
          stop_reason: 'end_turn',
          stop_sequence: null,
          usage: { input_tokens: 0, output_tokens: 0 },
        },
      });
    }
  });
  return lines.map((line) => `${line}\n`).join('');
}
