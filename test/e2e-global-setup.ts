import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { ensureImage } from '../packages/cli/src/runtime.js';
import { boxesDir } from '../packages/vm/src/paths.js';
import { E2E_AGENTS } from './e2e-image.js';
import { testHome } from './helpers.js';

/**
 * Box ids the e2e helpers, `agentbox run` and the per-project commands (`proj-`, removed by their
 * tests) make; anything of theirs left at the end is a leak.
 */
const TEST_BOX_PREFIXES = ['e2e-', 'run-', 'proj-'];

function leakedBoxes(): { dirs: string[]; processes: string[] } {
  let dirs: string[] = [];
  try {
    dirs = fs.readdirSync(boxesDir(testHome())).filter((d) => TEST_BOX_PREFIXES.some((p) => d.startsWith(p)));
  } catch {
    // no boxes dir
  }
  let processes: string[] = [];
  try {
    processes = execFileSync(
      'pgrep',
      ['-af', `qemu-system.*${boxesDir(testHome())}/(${TEST_BOX_PREFIXES.join('|')})`],
      {
        encoding: 'utf8',
      },
    )
      .split('\n')
      .filter(Boolean);
  } catch {
    // pgrep exits 1 when nothing matches
  }
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
