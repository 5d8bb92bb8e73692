import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { AgentboxError, IMAGE_API_VERSION } from '@agentbox/protocol';
import { AGENT_CLI_NAMES } from './recipe.js';

export const ImageManifestSchema = z
  .object({
    id: z.string().regex(/^[0-9a-f]{16,64}$/),
    imageApiVersion: z.number().int(),
    builtAt: z.string(),
    buildSeconds: z.number().nonnegative(),
    debianSuite: z.string(),
    kernel: z.object({ package: z.string(), version: z.string(), release: z.string() }).strict(),
    rootfs: z.object({ key: z.string(), packages: z.array(z.string()) }).strict(),
    agent: z
      .object({
        version: z.string(),
        sha256: z.string(),
        snapshot: z
          .boolean()
          .optional()
          .describe(
            'Whether the initramfs holds a V8 startup snapshot of the agent (it then starts from it).',
          ),
        nativeAddon: z
          .boolean()
          .optional()
          .describe(
            'Whether the initramfs holds agentbox.node (processes are then started by it, not by node).',
          ),
      })
      .strict()
      .describe('The agentbox guest agent in the initramfs.'),
    agents: z
      .partialRecord(z.enum(AGENT_CLI_NAMES), z.string())
      .describe('Agent CLI → the npm version installed in /usr/local (`claude`, `codex`, `opencode`).'),
    components: z.record(z.string(), z.string()).describe('Package → version of what the rootfs holds.'),
    files: z
      .object({
        kernel: z.string(),
        initrd: z.string(),
        rootfs: z.string(),
      })
      .strict(),
    sizes: z.object({ kernelBytes: z.number(), initrdBytes: z.number(), rootfsBytes: z.number() }).strict(),
  })
  .strict();
export type ImageManifest = z.infer<typeof ImageManifestSchema>;

export interface Image {
  dir: string;
  manifest: ImageManifest;
  kernelPath: string;
  initrdPath: string;
  rootfsPath: string;
}

/** Reads and checks an image directory; a damaged or foreign image is an `image_invalid` error that says how to fix it. */
export function loadImage(dir: string): Image {
  const manifestPath = path.join(dir, 'manifest.json');
  let manifest: ImageManifest;
  try {
    manifest = ImageManifestSchema.parse(JSON.parse(fs.readFileSync(manifestPath, 'utf8')));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new AgentboxError('image_missing', `no image at ${dir}; run \`agentbox image build\``);
    }
    throw new AgentboxError(
      'image_invalid',
      `image manifest ${manifestPath} is unreadable; run \`agentbox image build --force\``,
    );
  }
  if (manifest.imageApiVersion !== IMAGE_API_VERSION) {
    throw new AgentboxError(
      'image_invalid',
      `image ${manifest.id} has image API version ${manifest.imageApiVersion}, this agentbox needs ${IMAGE_API_VERSION}; run \`agentbox image build\``,
    );
  }
  const image: Image = {
    dir,
    manifest,
    kernelPath: path.join(dir, manifest.files.kernel),
    initrdPath: path.join(dir, manifest.files.initrd),
    rootfsPath: path.join(dir, manifest.files.rootfs),
  };
  for (const file of [image.kernelPath, image.initrdPath, image.rootfsPath]) {
    if (!fs.existsSync(file)) {
      throw new AgentboxError(
        'image_invalid',
        `image ${manifest.id} is missing ${path.basename(file)}; run \`agentbox image build --force\``,
      );
    }
  }
  return image;
}
