import { mcpServers, rulesDocument, skillFiles } from '../library.js';
import { isObject, joinPath, str, type JsonObject } from '../shared.js';
import { tomlTable } from '../toml.js';
import type { GuestFile, ResolvedLibraryItem, RunnerContext } from '../types.js';

/**
 * Where library items go for Codex: skills → `~/.codex/skills/<name>/`, rules →
 * `~/.codex/AGENTS.md`, MCP servers → `[mcp_servers.<name>]` in `~/.codex/config.toml`. Codex has
 * no place for Claude-style agents, hooks or settings: those items are not materialized.
 */

/** A Claude-style MCP server entry in Codex's terms: stdio (command/args/env) or streamable HTTP (url). */
export function codexMcpServer(server: JsonObject): Record<string, unknown> | undefined {
  const command = str(server.command);
  if (command !== undefined) {
    return {
      command,
      args: Array.isArray(server.args) ? server.args.filter((a) => typeof a === 'string') : undefined,
      env: isObject(server.env) ? server.env : undefined,
    };
  }
  const url = str(server.url);
  if (url !== undefined && server.type !== 'sse') {
    return { url, http_headers: isObject(server.headers) ? server.headers : undefined };
  }
  return undefined;
}

export function materializeForCodex(items: ResolvedLibraryItem[], ctx: RunnerContext): GuestFile[] {
  const codexDir = joinPath(ctx.home, '.codex');
  const files = skillFiles(items, joinPath(codexDir, 'skills'));
  const rules = rulesDocument(items);
  if (rules !== undefined) files.push({ path: joinPath(codexDir, 'AGENTS.md'), content: rules });
  const tables = Object.entries(mcpServers(items)).flatMap(([name, server]) => {
    const converted = codexMcpServer(server);
    return converted === undefined ? [] : [tomlTable(['mcp_servers', name], converted)];
  });
  if (tables.length > 0) files.push({ path: joinPath(codexDir, 'config.toml'), content: tables.join('\n') });
  return files;
}
