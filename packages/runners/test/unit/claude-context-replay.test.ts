import { describe, expect, it } from 'vitest';
import { TaskSpecSchema } from '@agentbox/protocol';
import { claudeCommand } from '../../src/claude/claude-command.js';
import { claudeProjectDirName, claudeSessionPath } from '../../src/claude/claude-session.js';

const SESSION = '0f1e2d3c-4b5a-4968-8776-655443322110';
const NOW = new Date('2026-01-02T03:04:05.000Z');

function replay(context: { role: 'user' | 'assistant'; content: string }[], cwd = '/workspace/my_repo.git') {
  return claudeCommand(
    TaskSpecSchema.parse({ prompt: 'And now?', context }),
    { cwd, home: '/root' },
    {
      newSessionId: () => SESSION,
      now: NOW,
    },
  );
}

describe('claude context replay', () => {
  it('names the project directory as the CLI does: every non-alphanumeric character becomes -', () => {
    expect(claudeProjectDirName('/workspace/my_repo.git')).toBe('-workspace-my-repo-git');
    expect(claudeSessionPath('/root', '/w', SESSION)).toBe(`/root/.claude/projects/-w/${SESSION}.jsonl`);
    expect(claudeProjectDirName(`/${'a'.repeat(250)}`)).toBeUndefined();
  });

  it('writes the messages as a session transcript and resumes it', () => {
    const cmd = replay([
      { role: 'user', content: 'Remember PAPAYA.' },
      { role: 'assistant', content: 'Noted.' },
      { role: 'user', content: 'And 42.' },
      { role: 'assistant', content: 'Noted: 42.' },
    ]);
    expect(cmd.argv.slice(-2)).toEqual(['--resume', SESSION]);
    expect(cmd.stdin).toBe('And now?');
    expect(cmd.files).toHaveLength(1);
    const file = cmd.files[0]!;
    expect(file.path).toBe(`/root/.claude/projects/-workspace-my-repo-git/${SESSION}.jsonl`);
    const entries = file.content
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(entries.map((e) => e.type)).toEqual(['user', 'attachment', 'assistant', 'user', 'assistant']);
    // one chain: each entry's parent is the one before it
    entries.forEach((entry, i) => expect(entry.parentUuid).toBe(i === 0 ? null : entries[i - 1]!.uuid));
    for (const entry of entries) {
      expect(entry).toMatchObject({ sessionId: SESSION, cwd: '/workspace/my_repo.git', isSidechain: false });
    }
    expect(entries[0]!.message).toEqual({ role: 'user', content: 'Remember PAPAYA.' });
    expect(entries[2]!.message).toMatchObject({
      role: 'assistant',
      content: [{ type: 'text', text: 'Noted.' }],
      stop_reason: 'end_turn',
    });
    expect(entries[1]).toMatchObject({
      renderedRole: 'system',
      attachment: { type: 'date', date: '2026-01-02' },
    });
    expect(entries[0]!.timestamp).toBe('2026-01-02T03:04:05.000Z');
  });

  it('joins runs of one role, starts with a user turn, and moves trailing user text before the prompt', () => {
    const cmd = replay([
      { role: 'assistant', content: 'Hello.' },
      { role: 'assistant', content: 'Still here.' },
      { role: 'user', content: 'Q1' },
      { role: 'user', content: 'Q2' },
    ]);
    const entries = cmd.files[0]!.content.trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as { type: string; message?: { content: unknown } });
    expect(entries.map((e) => e.type)).toEqual(['user', 'attachment', 'assistant']);
    expect(entries[0]!.message!.content).toBe('(earlier conversation)');
    expect(entries[2]!.message!.content).toEqual([{ type: 'text', text: 'Hello.\n\nStill here.' }]);
    expect(cmd.stdin).toBe('Q1\n\nQ2\n\nAnd now?');
  });

  it('falls back to a transcript in the prompt when the cwd is too long to name its project directory', () => {
    const cmd = replay(
      [
        { role: 'user', content: 'Remember PAPAYA.' },
        { role: 'assistant', content: 'Noted.' },
      ],
      `/${'deep/'.repeat(60)}repo`,
    );
    expect(cmd.files).toEqual([]);
    expect(cmd.argv).not.toContain('--resume');
    expect(cmd.stdin).toContain('<user>\nRemember PAPAYA.\n</user>\n<assistant>\nNoted.\n</assistant>');
    expect(cmd.stdin!.endsWith('And now?')).toBe(true);
  });
});
