import { z } from 'zod';
import {
  AgentDefinitionSchema,
  LibraryKindSchema,
  LibraryNameSchema,
  LibraryNamespaceSchema,
  WorkspaceFileNameSchema,
  type LibraryKind,
} from './task.js';

/**
 * The library (seed 002): skills, agent definitions, MCP servers, hooks, rules and settings, per
 * namespace (`_global` or a project), materialized into the guest when a task starts.
 */

/** Largest item (all its files together). */
export const LIBRARY_ITEM_MAX_BYTES = 1024 * 1024;

/** The file each kind must have; its content is checked by LIBRARY_MAIN_FILE_SCHEMAS. */
export const LIBRARY_MAIN_FILE: Record<LibraryKind, string> = {
  skill: 'SKILL.md',
  agent: 'agent.json',
  mcp: 'mcp.json',
  hooks: 'hooks.json',
  settings: 'settings.json',
  rules: 'RULES.md',
};

const JsonObject = z.record(z.string(), z.unknown());

/** JSON main files and their shape; markdown ones only need to be non-empty. */
export const LIBRARY_JSON_SCHEMAS: Partial<Record<LibraryKind, z.ZodType>> = {
  agent: AgentDefinitionSchema,
  mcp: z.object({ mcpServers: z.record(z.string().min(1), JsonObject) }).strict(),
  hooks: z.object({ hooks: JsonObject }).strict(),
  settings: JsonObject,
};

export const LibraryItemParamsSchema = z
  .object({ kind: LibraryKindSchema, namespace: LibraryNamespaceSchema, name: LibraryNameSchema })
  .strict();

export const LibraryFilesSchema = z
  .record(WorkspaceFileNameSchema, z.string())
  .refine((files) => Object.keys(files).length >= 1 && Object.keys(files).length <= 64, '1 to 64 files')
  .describe('Relative file name → UTF-8 content.');

export const PutLibraryItemRequestSchema = z.object({ files: LibraryFilesSchema }).strict();
export type PutLibraryItemRequest = z.infer<typeof PutLibraryItemRequestSchema>;

export const LibraryItemSummarySchema = z
  .object({
    kind: LibraryKindSchema,
    namespace: z.string(),
    name: z.string(),
    sha256: z.string().describe('Content hash of the item (its files, by name).'),
  })
  .strict();
export type LibraryItemSummary = z.infer<typeof LibraryItemSummarySchema>;

export const LibraryItemSchema = LibraryItemSummarySchema.extend({
  files: z.record(z.string(), z.string()),
}).strict();
export type LibraryItem = z.infer<typeof LibraryItemSchema>;

export const LibraryListQuerySchema = z
  .object({ kind: LibraryKindSchema.optional(), namespace: LibraryNamespaceSchema.optional() })
  .strict();

export const LibraryListResponseSchema = z.object({ items: z.array(LibraryItemSummarySchema) }).strict();
