import { describe, expect, it } from 'vitest';
import {
  claudeRunner,
  codexRunner,
  opencodeRunner,
  type GuestFile,
  type ResolvedLibraryItem,
} from '../../src/index.js';

const ctx = { cwd: '/workspace/repo', home: '/root' };
const item = (
  kind: ResolvedLibraryItem['kind'],
  name: string,
  files: Record<string, string>,
  namespace = '_global',
) => ({
  kind,
  namespace,
  name,
  sha256: `sha-${name}`,
  files,
});

const LIBRARY: ResolvedLibraryItem[] = [
  item('skill', 'greeter', {
    'SKILL.md': '---\nname: greeter\ndescription: Greets\n---\nSay hi.\n',
    'scripts/run.sh': 'echo hi',
  }),
  item(
    'agent',
    'reviewer',
    {
      'agent.json': JSON.stringify({
        name: 'reviewer',
        description: 'Reviews code',
        systemPrompt: 'You review.',
        tools: ['Read', 'Grep'],
        disallowedTools: ['Bash'],
        model: 'claude-haiku-4-5',
      }),
    },
    'proj',
  ),
  item('mcp', 'servers', {
    'mcp.json': JSON.stringify({
      mcpServers: {
        echo: { command: 'node', args: ['/opt/echo.js'], env: { A: '1' } },
        web: { type: 'http', url: 'https://mcp.example.com/mcp', headers: { 'X-Key': 'k' } },
      },
    }),
  }),
  item(
    'mcp',
    'more',
    { 'mcp.json': JSON.stringify({ mcpServers: { other: { command: 'other-mcp' } } }) },
    'proj',
  ),
  item('hooks', 'audit', {
    'hooks.json': JSON.stringify({
      hooks: { PreToolUse: [{ matcher: 'Bash', hooks: [{ type: 'command', command: 'log' }] }] },
    }),
  }),
  item('hooks', 'audit2', {
    'hooks.json': JSON.stringify({
      hooks: { PreToolUse: [{ matcher: 'Write', hooks: [{ type: 'command', command: 'log2' }] }] },
    }),
  }),
  item('settings', 'base', {
    'settings.json': JSON.stringify({ env: { A: '1' }, permissions: { deny: ['Read(.env)'] } }),
  }),
  item('settings', 'proj', { 'settings.json': JSON.stringify({ env: { B: '2' } }) }, 'proj'),
  item('rules', 'style', { 'RULES.md': 'Use tabs.\n' }),
  item('rules', 'tests', { 'RULES.md': 'Write tests.' }, 'proj'),
];

const byPath = (files: GuestFile[]) => Object.fromEntries(files.map((f) => [f.path, f.content]));

describe('library → Claude Code layout', () => {
  const files = byPath(claudeRunner.materialize(LIBRARY, ctx));

  it('puts every file of a skill under ~/.claude/skills/<name>/', () => {
    expect(files['/root/.claude/skills/greeter/SKILL.md']).toContain('name: greeter');
    expect(files['/root/.claude/skills/greeter/scripts/run.sh']).toBe('echo hi');
  });

  it('writes an agent as ~/.claude/agents/<name>.md with tools, disallowedTools and model in its frontmatter', () => {
    expect(files['/root/.claude/agents/reviewer.md']).toBe(
      [
        '---',
        'name: "reviewer"',
        'description: "Reviews code"',
        'tools: ["Read", "Grep"]',
        'disallowedTools: ["Bash"]',
        'model: "claude-haiku-4-5"',
        '---',
        'You review.',
        '',
      ].join('\n'),
    );
  });

  it('merges every MCP server into <cwd>/.mcp.json', () => {
    expect(JSON.parse(files['/workspace/repo/.mcp.json']!)).toEqual({
      mcpServers: {
        echo: { command: 'node', args: ['/opt/echo.js'], env: { A: '1' } },
        web: { type: 'http', url: 'https://mcp.example.com/mcp', headers: { 'X-Key': 'k' } },
        other: { command: 'other-mcp' },
      },
    });
  });

  it('merges settings and hooks into ~/.claude/settings.json, enabling the project MCP servers', () => {
    expect(JSON.parse(files['/root/.claude/settings.json']!)).toEqual({
      enableAllProjectMcpServers: true,
      env: { A: '1', B: '2' },
      permissions: { deny: ['Read(.env)'] },
      hooks: {
        PreToolUse: [
          { matcher: 'Bash', hooks: [{ type: 'command', command: 'log' }] },
          { matcher: 'Write', hooks: [{ type: 'command', command: 'log2' }] },
        ],
      },
    });
  });

  it('concatenates rules into ~/.claude/CLAUDE.md under headers naming each rule', () => {
    expect(files['/root/.claude/CLAUDE.md']).toBe(
      '# Rules from the agentbox library\n\n## Rule: _global/style\n\nUse tabs.\n\n## Rule: proj/tests\n\nWrite tests.\n',
    );
  });

  it('writes nothing for an empty library, and throws on a malformed main file', () => {
    expect(claudeRunner.materialize([], ctx)).toEqual([]);
    expect(() => claudeRunner.materialize([item('mcp', 'bad', { 'mcp.json': '{' })], ctx)).toThrow(
      /mcp _global\/bad: mcp.json is not JSON/,
    );
    expect(() =>
      claudeRunner.materialize([item('agent', 'bad', { 'agent.json': '{"name":"../x"}' })], ctx),
    ).toThrow();
  });
});

describe('library → Codex layout', () => {
  const files = byPath(codexRunner.materialize(LIBRARY, ctx));

  it('skills under ~/.codex/skills, rules in ~/.codex/AGENTS.md', () => {
    expect(files['/root/.codex/skills/greeter/SKILL.md']).toContain('Say hi.');
    expect(files['/root/.codex/AGENTS.md']).toContain('## Rule: proj/tests');
  });

  it('MCP servers as [mcp_servers.<name>] tables in ~/.codex/config.toml (stdio and streamable HTTP)', () => {
    expect(files['/root/.codex/config.toml']).toBe(
      [
        '[mcp_servers.echo]',
        'command = "node"',
        'args = ["/opt/echo.js"]',
        'env = { A = "1" }',
        '',
        '[mcp_servers.web]',
        'url = "https://mcp.example.com/mcp"',
        'http_headers = { X-Key = "k" }',
        '',
        '[mcp_servers.other]',
        'command = "other-mcp"',
        '',
      ].join('\n'),
    );
  });

  it('has no place for agents, hooks or settings', () => {
    expect(Object.keys(files).sort()).toEqual([
      '/root/.codex/AGENTS.md',
      '/root/.codex/config.toml',
      '/root/.codex/skills/greeter/SKILL.md',
      '/root/.codex/skills/greeter/scripts/run.sh',
    ]);
  });
});

describe('library → OpenCode layout', () => {
  const files = byPath(opencodeRunner.materialize(LIBRARY, ctx));

  it('skills, agents and rules under ~/.config/opencode', () => {
    expect(files['/root/.config/opencode/skills/greeter/SKILL.md']).toContain('Say hi.');
    expect(files['/root/.config/opencode/agents/reviewer.md']).toBe(
      [
        '---',
        'description: "Reviews code"',
        'mode: all',
        'model: "anthropic/claude-haiku-4-5"',
        'tools:',
        '  "*": false',
        '  "read": true',
        '  "grep": true',
        '  "bash": false',
        '---',
        'You review.',
        '',
      ].join('\n'),
    );
    expect(files['/root/.config/opencode/AGENTS.md']).toContain('Use tabs.');
  });

  it('MCP servers as local (command array) or remote entries in opencode.json', () => {
    expect(JSON.parse(files['/root/.config/opencode/opencode.json']!)).toEqual({
      mcp: {
        echo: { type: 'local', command: ['node', '/opt/echo.js'], environment: { A: '1' } },
        web: { type: 'remote', url: 'https://mcp.example.com/mcp', headers: { 'X-Key': 'k' } },
        other: { type: 'local', command: ['other-mcp'] },
      },
    });
  });
});
