// Bundles the guest agent into one ESM file for the image's node (the image ships node 22).
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
await build({
  entryPoints: [`${here}src/main.ts`],
  outfile: `${here}dist/agent.mjs`,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  conditions: ['source'],
  minify: true,
  legalComments: 'none',
  banner: { js: '// agentbox guest agent, bundled; see packages/guest' },
  logLevel: 'warning',
});
