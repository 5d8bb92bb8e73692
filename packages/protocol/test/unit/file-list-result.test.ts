import { describe, expect, it } from 'vitest';
import { FileListResponseSchema, ListWorkspaceFilesResponseSchema, RESULT_SCHEMAS } from '../../src/index.js';

const entry = { name: 'a', path: '/w/a', type: 'file', size: 1, mode: 0o644, modifiedMs: 0 };

describe('file.list result', () => {
  it('takes a listing with its omitted count', () => {
    expect(RESULT_SCHEMAS['file.list'].parse({ entries: [entry], omitted: 2 })).toEqual({
      entries: [entry],
      omitted: 2,
    });
  });

  it('takes the bare array of an agent that predates `omitted`', () => {
    expect(RESULT_SCHEMAS['file.list'].parse([entry])).toEqual({ entries: [entry], omitted: 0 });
  });

  it('refuses a negative count and a symlink target type of symlink', () => {
    expect(RESULT_SCHEMAS['file.list'].safeParse({ entries: [], omitted: -1 }).success).toBe(false);
    const link = { ...entry, type: 'symlink', targetType: 'symlink' };
    expect(RESULT_SCHEMAS['file.list'].safeParse({ entries: [link], omitted: 0 }).success).toBe(false);
  });
});

describe('listing responses', () => {
  it('/v1 always says how many entries were omitted', () => {
    expect(FileListResponseSchema.safeParse({ path: '/w', entries: [] }).success).toBe(false);
    expect(FileListResponseSchema.safeParse({ path: '/w', entries: [], omitted: 0 }).success).toBe(true);
  });

  it('the seed listing keeps its shape unless something was omitted', () => {
    expect(ListWorkspaceFilesResponseSchema.safeParse({ files: ['a'] }).success).toBe(true);
    expect(ListWorkspaceFilesResponseSchema.safeParse({ files: [], omitted: 3 }).success).toBe(true);
    expect(ListWorkspaceFilesResponseSchema.safeParse({ files: [], omitted: 0 }).success).toBe(false);
  });
});
