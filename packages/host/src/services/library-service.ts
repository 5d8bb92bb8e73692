import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  AgentDefinitionSchema,
  AgentboxError,
  LIBRARY_ITEM_MAX_BYTES,
  LIBRARY_JSON_SCHEMAS,
  LIBRARY_KINDS,
  LIBRARY_MAIN_FILE,
  LibraryNamespaceSchema,
  type AgentDefinition,
  type LibraryItem,
  type LibraryItemSummary,
  type LibraryKind,
  type TaskSpec,
} from '@agentbox/protocol';
import type { ResolvedLibraryItem } from '@agentbox/runners';

export const GLOBAL_NAMESPACE = '_global';

export interface ItemRef {
  kind: LibraryKind;
  namespace: string;
  name: string;
}

/** Content hash of an item: its files sorted by name, each name and content length-prefixed. */
export function itemHash(files: Record<string, string>): string {
  const hash = createHash('sha256');
  for (const name of Object.keys(files).sort()) {
    const content = Buffer.from(files[name]!);
    hash.update(`${Buffer.byteLength(name)}:${name}\n${content.length}:`);
    hash.update(content);
  }
  return hash.digest('hex');
}

/** Checks an item's files for its kind: the main file present and well-formed, the size bounded. */
export function validateItem(kind: LibraryKind, name: string, files: Record<string, string>): void {
  const bytes = Object.entries(files).reduce(
    (n, [f, c]) => n + Buffer.byteLength(f) + Buffer.byteLength(c),
    0,
  );
  if (bytes > LIBRARY_ITEM_MAX_BYTES) {
    throw new AgentboxError(
      'payload_too_large',
      `library item is ${bytes} bytes; the limit is ${LIBRARY_ITEM_MAX_BYTES}`,
    );
  }
  const main = LIBRARY_MAIN_FILE[kind];
  const content = files[main];
  const invalid = (message: string) =>
    new AgentboxError('invalid_request', `${kind} ${name}: ${message}`, {
      details: { field: `files.${main}` },
    });
  if (content === undefined || content.trim() === '') throw invalid(`needs a non-empty ${main}`);
  const schema = LIBRARY_JSON_SCHEMAS[kind];
  if (!schema) return;
  let parsed: unknown;
  try {
    parsed = JSON.parse(content);
  } catch {
    throw invalid(`${main} is not JSON`);
  }
  const result = schema.safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw invalid(`${main}: ${issue.path.map(String).join('.') || '(root)'}: ${issue.message}`);
  }
  if (kind === 'agent' && (result.data as AgentDefinition).name !== name) {
    throw invalid(`${main}: name must be "${name}", the item's name`);
  }
}

/**
 * The library on the host's disk: `<root>/<kind>/<namespace>/<name>/<files>`. Writes replace an
 * item whole (a new directory renamed over the old), so a task never sees half an item.
 */
export function createLibraryService(options: { root: string }) {
  const { root } = options;
  const dirOf = (ref: ItemRef) => path.join(root, ref.kind, ref.namespace, ref.name);

  function readFiles(dir: string, prefix = ''): Record<string, string> {
    const files: Record<string, string> = {};
    for (const entry of fs.readdirSync(path.join(dir, prefix), { withFileTypes: true })) {
      const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory()) Object.assign(files, readFiles(dir, rel));
      else if (entry.isFile()) files[rel] = fs.readFileSync(path.join(dir, rel), 'utf8');
    }
    return files;
  }

  function read(ref: ItemRef): LibraryItem | undefined {
    const dir = dirOf(ref);
    if (!fs.existsSync(dir)) return undefined;
    const files = readFiles(dir);
    return { ...ref, sha256: itemHash(files), files };
  }

  function get(ref: ItemRef): LibraryItem {
    const item = read(ref);
    if (!item) {
      throw new AgentboxError(
        'library_item_not_found',
        `no ${ref.kind} ${ref.name} in library namespace ${ref.namespace}`,
      );
    }
    return item;
  }

  async function put(ref: ItemRef, files: Record<string, string>): Promise<LibraryItemSummary> {
    validateItem(ref.kind, ref.name, files);
    const dir = dirOf(ref);
    const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`;
    await fsp.mkdir(tmp, { recursive: true });
    try {
      for (const [name, content] of Object.entries(files)) {
        await fsp.mkdir(path.dirname(path.join(tmp, name)), { recursive: true });
        await fsp.writeFile(path.join(tmp, name), content);
      }
      const old = `${dir}.old-${randomBytes(4).toString('hex')}`;
      await fsp.rename(dir, old).catch(() => undefined);
      await fsp.rename(tmp, dir);
      await fsp.rm(old, { recursive: true, force: true });
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw err;
    }
    return { ...ref, sha256: itemHash(files) };
  }

  async function remove(ref: ItemRef): Promise<void> {
    get(ref);
    await fsp.rm(dirOf(ref), { recursive: true, force: true });
  }

  function list(filter: { kind?: LibraryKind; namespace?: string } = {}): LibraryItemSummary[] {
    const out: LibraryItemSummary[] = [];
    for (const kind of filter.kind ? [filter.kind] : LIBRARY_KINDS) {
      const kindDir = path.join(root, kind);
      const namespaces = filter.namespace ? [filter.namespace] : safeReaddir(kindDir);
      for (const namespace of namespaces) {
        if (!LibraryNamespaceSchema.safeParse(namespace).success) continue;
        for (const name of safeReaddir(path.join(kindDir, namespace))) {
          if (name.includes('.tmp-') || name.includes('.old-')) continue;
          const item = read({ kind, namespace, name });
          if (item) out.push({ kind, namespace, name, sha256: item.sha256 });
        }
      }
    }
    return out;
  }

  /**
   * The items a task runs with: everything in `_global`, overlaid by the task's project (same kind
   * and name: the project's wins), plus the refs the spec names; and its agent definition.
   */
  function resolveForTask(spec: TaskSpec): {
    items: ResolvedLibraryItem[];
    agentDefinition: AgentDefinition | undefined;
  } {
    const chosen = new Map<string, ResolvedLibraryItem>();
    const add = (item: LibraryItem) => chosen.set(`${item.kind}/${item.name}`, item);
    const namespaces = spec.project ? [GLOBAL_NAMESPACE, spec.project] : [GLOBAL_NAMESPACE];
    for (const namespace of namespaces) {
      for (const summary of list({ namespace })) add(get(summary));
    }
    for (const ref of spec.library ?? []) {
      const found = (ref.namespace ? [ref.namespace] : [...namespaces].reverse())
        .map((namespace) => read({ kind: ref.kind, namespace, name: ref.name }))
        .find((item) => item !== undefined);
      if (!found) {
        throw new AgentboxError('invalid_request', `library ${ref.kind} ${ref.name} does not exist`, {
          details: { field: 'library' },
        });
      }
      add(found);
    }
    let agentDefinition: AgentDefinition | undefined;
    const def = spec.agentDefinition;
    if (def && 'ref' in def) {
      const item = chosen.get(`agent/${def.ref}`);
      if (!item) {
        throw new AgentboxError('invalid_request', `library agent ${def.ref} does not exist`, {
          details: { field: 'agentDefinition.ref' },
        });
      }
      agentDefinition = AgentDefinitionSchema.parse(JSON.parse(item.files[LIBRARY_MAIN_FILE.agent]!));
    } else if (def) {
      agentDefinition = def;
    }
    return { items: [...chosen.values()], agentDefinition };
  }

  return { get, put, remove, list, resolveForTask, root };
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}

export type LibraryService = ReturnType<typeof createLibraryService>;
