import { AgentDefinitionSchema, type AgentDefinition, type LibraryKind } from '@agentbox/protocol';
import { isObject, joinPath, mergeJson, type JsonObject } from './shared.js';
import type { GuestFile, ResolvedLibraryItem } from './types.js';

/** Reading library items, the same for every adapter; each adapter decides where they go. */

export function itemsOfKind(items: readonly ResolvedLibraryItem[], kind: LibraryKind): ResolvedLibraryItem[] {
  return items.filter((item) => item.kind === kind);
}

function label(item: ResolvedLibraryItem): string {
  return `${item.kind} ${item.namespace}/${item.name}`;
}

/** The item's JSON main file as an object; a missing or malformed file is the host's bug, so it throws. */
export function jsonFile(item: ResolvedLibraryItem, file: string): JsonObject {
  const text = item.files[file];
  if (text === undefined) throw new Error(`library ${label(item)} has no ${file}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`library ${label(item)}: ${file} is not JSON`, { cause: err });
  }
  if (!isObject(value)) throw new Error(`library ${label(item)}: ${file} is not a JSON object`);
  return value;
}

export function agentDefinitionOf(item: ResolvedLibraryItem): AgentDefinition {
  return AgentDefinitionSchema.parse(jsonFile(item, 'agent.json'));
}

/** Every file of every skill, under `<dir>/<skill name>/`. */
export function skillFiles(items: readonly ResolvedLibraryItem[], dir: string): GuestFile[] {
  return itemsOfKind(items, 'skill').flatMap((item) =>
    Object.entries(item.files).map(([rel, content]) => ({ path: joinPath(dir, item.name, rel), content })),
  );
}

/** All rules in one markdown document, each under a header naming it; undefined when there are none. */
export function rulesDocument(items: readonly ResolvedLibraryItem[]): string | undefined {
  const rules = itemsOfKind(items, 'rules');
  if (rules.length === 0) return undefined;
  const sections = rules.map((item) => {
    const body = (item.files['RULES.md'] ?? Object.values(item.files).join('\n\n')).trim();
    return `## Rule: ${item.namespace}/${item.name}\n\n${body}\n`;
  });
  return `# Rules from the agentbox library\n\n${sections.join('\n')}`;
}

/** The `mcpServers` of every mcp item, merged by server name (later items win a name clash). */
export function mcpServers(items: readonly ResolvedLibraryItem[]): Record<string, JsonObject> {
  const servers: Record<string, JsonObject> = {};
  for (const item of itemsOfKind(items, 'mcp')) {
    const declared = jsonFile(item, 'mcp.json').mcpServers;
    if (!isObject(declared)) throw new Error(`library ${label(item)}: mcp.json has no mcpServers object`);
    for (const [name, config] of Object.entries(declared)) {
      if (isObject(config)) servers[name] = config;
    }
  }
  return servers;
}

/** settings items deep-merged, then every hooks item's `hooks` merged into `hooks` (lists per event concatenate). */
export function mergedSettings(items: readonly ResolvedLibraryItem[]): JsonObject | undefined {
  const settings = itemsOfKind(items, 'settings');
  const hooks = itemsOfKind(items, 'hooks');
  if (settings.length === 0 && hooks.length === 0) return undefined;
  let merged: JsonObject = {};
  for (const item of settings) merged = mergeJson(merged, jsonFile(item, 'settings.json'));
  for (const item of hooks) {
    const declared = jsonFile(item, 'hooks.json').hooks;
    if (isObject(declared)) merged = mergeJson(merged, { hooks: declared });
  }
  return merged;
}
