import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentExit, AgentOutcome, StreamParser, TaskEventDraft } from '../../src/index.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

/** Lines of a captured stdout (test/fixtures/<agent>/<name>.jsonl), without the final empty one. */
export function fixtureLines(name: string): string[] {
  const text = fs.readFileSync(path.join(FIXTURES, name), 'utf8');
  return text.split('\n').filter((line, i, all) => !(i === all.length - 1 && line === ''));
}

export const CLEAN_EXIT: AgentExit = { exitCode: 0, signal: null, timedOut: false, stderrTail: '' };

/** Feeds lines to a parser the way the host does, then the exit. */
export function parseAll(
  parser: StreamParser,
  lines: string[],
  exit: AgentExit = CLEAN_EXIT,
): { events: TaskEventDraft[]; outcome: AgentOutcome } {
  const events = lines.flatMap((line) => parser.line(line));
  events.push(...parser.end(exit));
  return { events, outcome: parser.outcome() };
}

export function types(events: TaskEventDraft[]): string[] {
  return events.map((e) => (e.type === 'error' ? `error:${(e.content as { code: string }).code}` : e.type));
}

/** The events without status ones: what a seed-style client sees. */
export function visible(events: TaskEventDraft[]): TaskEventDraft[] {
  return events.filter((e) => e.type !== 'status');
}
