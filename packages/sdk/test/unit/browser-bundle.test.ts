import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { describe, expect, it } from 'vitest';
import { TERMINAL_TASK_STATES } from '@agentbox/protocol';
import { ENDED_TASK_STATES } from '../../src/tasks.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const entry = path.join(here, '../../src/index.ts');

/**
 * The SDK also runs in a browser (the dashboard may use it): bundled for one, it needs no Node
 * built-in and carries none of zod (only protocol's error registry), and stays small.
 */
describe('the SDK bundled for a browser', () => {
  it('has no Node built-ins and no zod', async () => {
    const result = await esbuild.build({
      entryPoints: [entry],
      absWorkingDir: path.join(here, '../../../..'),
      bundle: true,
      platform: 'browser',
      format: 'esm',
      minify: true,
      write: false,
      metafile: true,
      conditions: ['source'],
      logLevel: 'silent',
    });
    const output = Object.values(result.metafile.outputs)[0]!;
    const included = Object.entries(output.inputs)
      .filter(([, input]) => input.bytesInOutput > 0)
      .map(([file]) => file);
    expect(included.filter((file) => !file.startsWith('packages/sdk/src/'))).toEqual([
      'packages/protocol/src/errors.ts',
    ]);
    expect(output.imports).toEqual([]);
    expect(result.outputFiles[0]!.text.length).toBeLessThan(40_000);
  });

  it('knows the same ended task states as the protocol', () => {
    expect([...ENDED_TASK_STATES].sort()).toEqual([...TERMINAL_TASK_STATES].sort());
  });
});
