import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['packages/*/test/unit/**/*.test.ts'],
          sequence: { groupOrder: 0 },
          testTimeout: 20_000,
          // vitest's default is one worker fewer than the cores: one, on a 2-core CI host.
          maxWorkers: 2,
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['packages/*/test/e2e/**/*.test.ts'],
          sequence: { groupOrder: 1 },
          globalSetup: ['test/e2e-global-setup.ts'],
          // Real VMs under TCG: each boot takes seconds of a core, and this machine has two.
          testTimeout: 240_000,
          hookTimeout: 240_000,
          maxWorkers: 2,
        },
      },
    ],
  },
});
