import { agentDefinitionOf, itemsOfKind, mcpServers, rulesDocument, skillFiles } from '../library.js';
import { isObject, joinPath, str, type JsonObject } from '../shared.js';
import type { GuestFile, ResolvedLibraryItem, RunnerContext } from '../types.js';
import { opencodeAgentMarkdown, opencodeAgentPath } from './opencode-command.js';

/**
 * Where library items go for OpenCode: skills → `~/.config/opencode/skills/<name>/`, agents →
 * `~/.config/opencode/agents/<name>.md`, rules → `~/.config/opencode/AGENTS.md`, MCP servers →
 * `mcp` in `~/.config/opencode/opencode.json`. Claude hooks and settings have no OpenCode form.
 */

/** A Claude-style MCP server entry as OpenCode's: `local` (command array) or `remote` (url). */
export function opencodeMcpServer(server: JsonObject): JsonObject | undefined {
  const command = str(server.command);
  if (command !== undefined) {
    const args = Array.isArray(server.args)
      ? server.args.filter((a): a is string => typeof a === 'string')
      : [];
    return {
      type: 'local',
      command: [command, ...args],
      ...(isObject(server.env) ? { environment: server.env } : {}),
    };
  }
  const url = str(server.url);
  if (url !== undefined)
    return { type: 'remote', url, ...(isObject(server.headers) ? { headers: server.headers } : {}) };
  return undefined;
}

export function materializeForOpencode(items: ResolvedLibraryItem[], ctx: RunnerContext): GuestFile[] {
  const dir = joinPath(ctx.home, '.config', 'opencode');
  const files = skillFiles(items, joinPath(dir, 'skills'));
  for (const item of itemsOfKind(items, 'agent')) {
    const def = agentDefinitionOf(item);
    files.push({ path: opencodeAgentPath(ctx.home, def.name), content: opencodeAgentMarkdown(def) });
  }
  const rules = rulesDocument(items);
  if (rules !== undefined) files.push({ path: joinPath(dir, 'AGENTS.md'), content: rules });
  const mcp: JsonObject = {};
  for (const [name, server] of Object.entries(mcpServers(items))) {
    const converted = opencodeMcpServer(server);
    if (converted !== undefined) mcp[name] = converted;
  }
  if (Object.keys(mcp).length > 0) {
    files.push({ path: joinPath(dir, 'opencode.json'), content: `${JSON.stringify({ mcp }, null, 2)}\n` });
  }
  return files;
}
