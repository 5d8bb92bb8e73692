// Bundles the guest agent into one CommonJS file for the image's node (the image ships node 22).
// CommonJS because the image builds a V8 startup snapshot from it (`node --build-snapshot` takes a
// single script); the same file also runs as it is (unit tests, images without a snapshot).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
await build({
  entryPoints: [`${here}src/main.ts`],
  outfile: `${here}dist/agent.cjs`,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node22',
  conditions: ['source'],
  minify: true,
  legalComments: 'none',
  banner: { js: '// agentbox guest agent, bundled; see packages/guest' },
  logLevel: 'warning',
});

// The native addon (native/agentbox-native.c), a Node-API module: ABI-stable, so this node's headers
// build one the image's node loads. Without a C compiler or the headers the image goes without it
// and the agent spawns with node (slower under TCG).
const headers = [path.join(path.dirname(process.execPath), '../include/node'), '/usr/include/node'].find(
  (dir) => fs.existsSync(path.join(dir, 'node_api.h')),
);
try {
  if (!headers) throw new Error('this node has no headers (node_api.h)');
  execFileSync(
    'gcc',
    [
      '-O2',
      '-shared',
      '-fPIC',
      '-Wall',
      '-Wextra',
      '-Werror',
      `-I${headers}`,
      '-o',
      `${here}dist/agentbox.node`,
      `${here}native/agentbox-native.c`,
    ],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
} catch (err) {
  fs.rmSync(`${here}dist/agentbox.node`, { force: true });
  console.warn(`guest: agentbox.node not built (${err.message}); boxes will start processes with node`);
}
