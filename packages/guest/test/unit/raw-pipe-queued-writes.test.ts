import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';

const source = fileURLToPath(new URL('../../src/raw-handle.ts', import.meta.url));

/**
 * Run in a child node with `--expose-gc`: writes 200 distinct 64 KiB buffers to a FIFO nobody reads
 * yet (libuv queues all but the first), drops them, collects garbage and allocates the same sizes
 * again, then reads the FIFO and compares what came out with what was written.
 */
const script = `
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
const { RawPipe } = await import(process.argv[2]);
const fifo = process.argv[3];
execFileSync('mkfifo', [fifo]);
const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
const pipe = RawPipe.open(fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
const sent = createHash('sha256');
const COUNT = 200;
let queued = 0;
for (let i = 0; i < COUNT; i++) {
  const chunk = Buffer.allocUnsafe(65536);
  for (let j = 0; j < chunk.length; j += 4) chunk.writeUInt32LE((i * 65536 + j) >>> 0, j);
  sent.update(chunk);
  if (!pipe.write([chunk]).sync) queued++;
}
globalThis.gc();
const churn = Array.from({ length: 200 }, () => Buffer.alloc(65536, 0xee));
const got = createHash('sha256');
let total = 0;
const buffer = Buffer.allocUnsafe(1 << 20);
while (total < COUNT * 65536) {
  let n = 0;
  try { n = fs.readSync(reader, buffer, 0, buffer.length, null); } catch { n = 0; }
  if (n > 0) { got.update(buffer.subarray(0, n)); total += n; }
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 1));
}
console.log(JSON.stringify({ queued, intact: got.digest('hex') === sent.digest('hex'), churn: churn.length }));
process.exit(0);
`;

// The agent ships minified (build.mjs); a minifier once dropped what kept queued chunks alive.
describe('RawPipe writes libuv had to queue, as the agent bundle ships them', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-rawpipe-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('go out as written, even when garbage is collected before they do', async () => {
    await build({
      entryPoints: [source],
      outfile: path.join(dir, 'raw-handle.mjs'),
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node22',
      minify: true,
      logLevel: 'warning',
    });
    fs.writeFileSync(path.join(dir, 'run.mjs'), script);
    const run = spawnSync(
      process.execPath,
      ['--expose-gc', path.join(dir, 'run.mjs'), path.join(dir, 'raw-handle.mjs'), path.join(dir, 'fifo')],
      { encoding: 'utf8', timeout: 60_000 },
    );
    expect(run.stderr).toBe('');
    const result = JSON.parse(run.stdout) as { queued: number; intact: boolean };
    // Nearly all were queued (a FIFO holds 64 KiB), so this tested what it means to.
    expect(result.queued).toBeGreaterThan(190);
    expect(result.intact).toBe(true);
  });
});
