import fs from 'node:fs';
import path from 'node:path';
import { createLibraryService, GLOBAL_NAMESPACE } from '@agentbox/host';
import {
  AgentboxError,
  LIBRARY_MAIN_FILE,
  LibraryItemParamsSchema,
  type LibraryKind,
} from '@agentbox/protocol';
import { writeJson } from '../output.js';
import { dataDirOf } from './serve.js';

const libraryOf = (data: string | undefined) =>
  createLibraryService({ root: path.join(dataDirOf(data), 'library') });

function refOf(kind: string, name: string, namespace: string | undefined) {
  const parsed = LibraryItemParamsSchema.safeParse({ kind, name, namespace: namespace ?? GLOBAL_NAMESPACE });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new AgentboxError('invalid_request', `${issue.path.join('.')}: ${issue.message}`);
  }
  return parsed.data;
}

/** Files of an item from a path: a directory (all its files) or one file (as the kind's main file). */
export function readItemFiles(kind: LibraryKind, from: string): Record<string, string> {
  const stat = fs.statSync(from);
  if (!stat.isDirectory()) return { [LIBRARY_MAIN_FILE[kind]]: fs.readFileSync(from, 'utf8') };
  const files: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(from, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(child);
      else if (entry.isFile()) files[child] = fs.readFileSync(path.join(from, child), 'utf8');
    }
  };
  walk('');
  return files;
}

/** `agentbox library add <kind> <name> <path>`: store (or replace) an item; the daemon reads it per task. */
export async function libraryAdd(
  kind: string,
  name: string,
  from: string,
  options: { namespace?: string; data?: string },
): Promise<number> {
  const ref = refOf(kind, name, options.namespace);
  const item = await libraryOf(options.data).put(ref, readItemFiles(ref.kind, from));
  process.stdout.write(`${item.kind}/${item.namespace}/${item.name} ${item.sha256.slice(0, 12)}\n`);
  return 0;
}

export function libraryList(options: {
  kind?: string;
  namespace?: string;
  data?: string;
  json: boolean;
}): number {
  const filter = refOf(options.kind ?? 'skill', 'x', options.namespace);
  const items = libraryOf(options.data).list({
    ...(options.kind ? { kind: filter.kind } : {}),
    ...(options.namespace ? { namespace: filter.namespace } : {}),
  });
  // As GET /v1/library answers.
  if (options.json) writeJson({ items });
  else
    for (const item of items) {
      process.stdout.write(
        `${item.kind.padEnd(8)} ${item.namespace.padEnd(16)} ${item.name.padEnd(24)} ${item.sha256.slice(0, 12)}\n`,
      );
    }
  return 0;
}

export function libraryShow(
  kind: string,
  name: string,
  options: { namespace?: string; data?: string },
): number {
  const item = libraryOf(options.data).get(refOf(kind, name, options.namespace));
  writeJson(item);
  return 0;
}

export async function libraryRemove(
  kind: string,
  name: string,
  options: { namespace?: string; data?: string },
): Promise<number> {
  const ref = refOf(kind, name, options.namespace);
  await libraryOf(options.data).remove(ref);
  process.stdout.write(`removed ${ref.kind}/${ref.namespace}/${ref.name}\n`);
  return 0;
}
