import type { AgentDefinition } from '@agentbox/protocol';
import {
  agentDefinitionOf,
  itemsOfKind,
  mcpServers,
  mergedSettings,
  rulesDocument,
  skillFiles,
} from '../library.js';
import { joinPath, yamlList, yamlString } from '../shared.js';
import type { GuestFile, ResolvedLibraryItem, RunnerContext } from '../types.js';

/**
 * Where library items go for Claude Code: skills → `~/.claude/skills/<name>/`, agents →
 * `~/.claude/agents/<name>.md`, MCP servers → `<cwd>/.mcp.json`, settings and hooks →
 * `~/.claude/settings.json`, rules → `~/.claude/CLAUDE.md`.
 */

export function claudeAgentPath(home: string, name: string): string {
  return joinPath(home, '.claude', 'agents', `${name}.md`);
}

/**
 * A sub-agent file: YAML frontmatter (name, description, tools, disallowedTools, model) and the
 * system prompt as the body. `maxTokens` has no frontmatter field; the runner passes it as
 * CLAUDE_CODE_MAX_OUTPUT_TOKENS when the task runs as this agent.
 */
export function claudeAgentMarkdown(def: AgentDefinition): string {
  const lines = ['---', `name: ${yamlString(def.name)}`];
  lines.push(`description: ${yamlString(def.description ?? `Agent ${def.name}`)}`);
  if (def.tools !== undefined) lines.push(`tools: ${yamlList(def.tools)}`);
  if (def.disallowedTools !== undefined) lines.push(`disallowedTools: ${yamlList(def.disallowedTools)}`);
  if (def.model !== undefined) lines.push(`model: ${yamlString(def.model)}`);
  lines.push('---', '');
  const body = def.systemPrompt?.trim();
  return `${lines.join('\n')}${body === undefined || body === '' ? `You are ${def.name}.` : body}\n`;
}

export function materializeForClaude(items: ResolvedLibraryItem[], ctx: RunnerContext): GuestFile[] {
  const claudeDir = joinPath(ctx.home, '.claude');
  const files: GuestFile[] = skillFiles(items, joinPath(claudeDir, 'skills'));
  for (const item of itemsOfKind(items, 'agent')) {
    const def = agentDefinitionOf(item);
    files.push({ path: claudeAgentPath(ctx.home, def.name), content: claudeAgentMarkdown(def) });
  }
  const servers = mcpServers(items);
  const hasMcp = Object.keys(servers).length > 0;
  if (hasMcp) {
    files.push({
      path: joinPath(ctx.cwd, '.mcp.json'),
      content: `${JSON.stringify({ mcpServers: servers }, null, 2)}\n`,
    });
  }
  const settings = mergedSettings(items);
  if (settings !== undefined || hasMcp) {
    // Project MCP servers wait for a per-server approval otherwise; these are the user's own.
    const merged = { ...(hasMcp ? { enableAllProjectMcpServers: true } : {}), ...settings };
    files.push({
      path: joinPath(claudeDir, 'settings.json'),
      content: `${JSON.stringify(merged, null, 2)}\n`,
    });
  }
  const rules = rulesDocument(items);
  if (rules !== undefined) files.push({ path: joinPath(claudeDir, 'CLAUDE.md'), content: rules });
  return files;
}
