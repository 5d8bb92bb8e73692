import type { CommandOutputEvent, ErrorBody } from '@agentbox/protocol';

/** What a background command printed so far, as text, and how it ended (null while it runs). */
export interface CommandOutputText {
  stdout: string;
  stderr: string;
  exit: { exitCode: number | null; signal: string | null; timedOut: boolean } | null;
  /** The daemon's error after the output (the box restarted while it ran: its end is unknown). */
  error: ErrorBody['error'] | null;
}

function fromBase64(data: string): Uint8Array {
  return Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
}

/**
 * The NDJSON of `GET …/commands/:id/output` as text: each stream decoded as UTF-8 across its
 * chunks (a character cut between two is whole), invalid bytes shown as U+FFFD.
 */
export function commandOutputText(ndjson: string): CommandOutputText {
  const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  const out: CommandOutputText = { stdout: '', stderr: '', exit: null, error: null };
  for (const line of ndjson.split('\n')) {
    if (line.trim() === '') continue;
    const event = JSON.parse(line) as CommandOutputEvent;
    switch (event.type) {
      case 'stdout':
      case 'stderr':
        out[event.type] += decoders[event.type].decode(fromBase64(event.data), { stream: true });
        break;
      case 'exit':
        out.exit = { exitCode: event.exitCode, signal: event.signal, timedOut: event.timedOut };
        break;
      case 'error':
        out.error = event.error;
        break;
      case 'skipped':
        out[event.stream] += `[… earlier output dropped: the command keeps only its last bytes …]\n`;
        break;
      case 'started':
      case 'running':
        break;
    }
  }
  out.stdout += decoders.stdout.decode();
  out.stderr += decoders.stderr.decode();
  return out;
}
