import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';

/** The box's workspace: created at boot, the default working directory, the root of the seed file API. */
export const WORKSPACE = '/workspace';

function checkCharacters(p: string): void {
  if (p.includes('\0')) throw new AgentboxError('invalid_request', 'path contains a NUL byte');
}

function hasDotDot(p: string): boolean {
  return p.split('/').includes('..');
}

/**
 * Seed API file names: relative to /workspace, never absolute, never with a `..` segment, and
 * still inside /workspace once normalized. Pure; tested apart.
 */
export function workspaceFile(filename: string, root = WORKSPACE): string {
  checkCharacters(filename);
  if (filename.startsWith('/') || hasDotDot(filename.replace(/\\/g, '/'))) {
    throw new AgentboxError(
      'path_outside_workspace',
      `${JSON.stringify(filename)} is not inside /workspace: give a path relative to it, without ".."`,
      { details: { field: 'filename' } },
    );
  }
  const full = path.posix.normalize(`${root}/${filename}`);
  if (!full.startsWith(`${root}/`) || full === `${root}/`) {
    throw new AgentboxError(
      'path_outside_workspace',
      `${JSON.stringify(filename)} is not a file in /workspace`,
      {
        details: { field: 'filename' },
      },
    );
  }
  return full;
}

/**
 * `/v1` paths: absolute paths anywhere in the box (the agent is root there; the VM is the boundary),
 * or relative to /workspace; a `..` segment is refused either way so a path means what it says.
 */
export function boxPath(p: string, root = WORKSPACE): string {
  checkCharacters(p);
  if (hasDotDot(p)) {
    throw new AgentboxError(
      'path_outside_workspace',
      `${JSON.stringify(p)} has a ".." segment; give a plain path`,
      {
        details: { field: 'path' },
      },
    );
  }
  const full = path.posix.normalize(p.startsWith('/') ? p : `${root}/${p}`);
  // normalize keeps a trailing slash; `/workspace/` must be the same path as `/workspace`.
  return full.length > 1 ? full.replace(/\/+$/, '') : full;
}
