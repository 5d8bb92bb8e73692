import { ensureImage } from '../packages/cli/src/runtime.js';
import { testHome } from './helpers.js';

/** Builds (or finds) the image once for every e2e test file; VM tests share it. */
export default async function setup(): Promise<void> {
  await ensureImage({ home: testHome(), quiet: true });
}
