import type { AgentCli } from '../packages/vm/src/image/recipe.js';

/**
 * The agent CLIs of the one image every e2e test uses, whether it boots boxes in-process or
 * through `agentbox serve` / `agentbox run`: CI builds a single image. scripts/test.sh exports the
 * same list.
 */
export const E2E_AGENTS: readonly AgentCli[] = ['claude', 'codex', 'opencode'];

/** Env for agentbox processes the tests start, so they pick that image too. */
export const E2E_IMAGE_ENV = { AGENTBOX_AGENTS: E2E_AGENTS.join(',') } as const;
