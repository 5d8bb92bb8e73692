import { agentboxHome } from '../packages/vm/src/paths.js';

/**
 * E2E tests use the agentbox home of the machine (AGENTBOX_HOME or ~/.agentbox) so the image built
 * by the README commands is shared, not rebuilt; each test cleans up the boxes it made.
 */
export function testHome(): string {
  return agentboxHome();
}
