import { agentboxHome } from '@agentbox/vm';
import { ensureImage, findBuiltImage } from '../runtime.js';

export async function imageBuild(options: { force: boolean; json: boolean }): Promise<number> {
  const { image, built } = await ensureImage({
    home: agentboxHome(),
    force: options.force,
    quiet: options.json,
  });
  if (options.json)
    process.stdout.write(JSON.stringify({ built, dir: image.dir, manifest: image.manifest }, null, 2) + '\n');
  else process.stdout.write(`${image.manifest.id} ${image.dir}\n`);
  return 0;
}

export function imageShow(options: { json: boolean }): number {
  const { image, error } = findBuiltImage(agentboxHome());
  if (error) throw error;
  if (!image) {
    process.stderr.write('agentbox: no image has been built; run `agentbox image build`\n');
    return 1;
  }
  if (options.json) process.stdout.write(JSON.stringify(image.manifest, null, 2) + '\n');
  else {
    const m = image.manifest;
    process.stdout.write(
      [
        `id:       ${m.id}`,
        `dir:      ${image.dir}`,
        `built:    ${m.builtAt} in ${m.buildSeconds}s`,
        `kernel:   ${m.kernel.package} ${m.kernel.version}`,
        `agent:    ${m.agent.version} (${m.agent.sha256.slice(0, 12)})`,
        `node:     ${m.components['node'] ?? '?'}`,
        `rootfs:   ${(m.sizes.rootfsBytes / 2 ** 20).toFixed(0)} MiB, ${Object.keys(m.components).length} packages`,
      ].join('\n') + '\n',
    );
  }
  return 0;
}
