import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureImage } from '../packages/cli/src/runtime.js';
import { boxesDir } from '../packages/vm/src/paths.js';
import { E2E_AGENTS } from './e2e-image.js';
import { testHome } from './helpers.js';

/** Box ids the e2e helpers and `agentbox run` make; anything of theirs left at the end is a leak. */
const TEST_BOX_PREFIXES = ['e2e-', 'run-'];
/**
 * Per-project boxes (`proj-`) count when their project is one of the tests' temp directories: a
 * developer's own project boxes in the same home are not the tests'.
 */
const TEST_PROJECT_ROOT = path.join(fs.realpathSync(os.tmpdir()), 'agentbox-proj-');

function isTestProjectBox(dir: string): boolean {
  if (!dir.startsWith('proj-')) return false;
  try {
    const state = JSON.parse(
      fs.readFileSync(path.join(boxesDir(testHome()), dir, 'project.json'), 'utf8'),
    ) as {
      root?: unknown;
    };
    return typeof state.root === 'string' && state.root.startsWith(TEST_PROJECT_ROOT);
  } catch {
    return false;
  }
}

function pgrep(pattern: string): string[] {
  try {
    return execFileSync('pgrep', ['-af', pattern], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    // pgrep exits 1 when nothing matches
    return [];
  }
}

function leakedBoxes(): { dirs: string[]; processes: string[] } {
  let dirs: string[] = [];
  try {
    dirs = fs
      .readdirSync(boxesDir(testHome()))
      .filter((d) => TEST_BOX_PREFIXES.some((p) => d.startsWith(p)) || isTestProjectBox(d));
  } catch {
    // no boxes dir
  }
  const boxes = boxesDir(testHome());
  const processes = [
    ...pgrep(`qemu-system.*${boxes}/(${TEST_BOX_PREFIXES.join('|')})`),
    ...pgrep(`qemu-system.*${boxes}/proj-.*path=${TEST_PROJECT_ROOT}`),
  ];
  return { dirs, processes };
}

/** Builds (or finds) the image once for every e2e test file; VM tests share it. */
export default async function setup(): Promise<() => void> {
  await ensureImage({ home: testHome(), quiet: true, agents: E2E_AGENTS });
  // After every e2e file ran: no qemu process, socket or overlay of a test box may remain.
  return () => {
    const leaks = leakedBoxes();
    if (leaks.dirs.length > 0 || leaks.processes.length > 0) {
      throw new Error(`e2e tests left boxes behind: ${JSON.stringify(leaks)}`);
    }
  };
}
