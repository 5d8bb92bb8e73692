import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { AgentboxError } from '@agentbox/protocol';
import {
  QemuBackend,
  QEMU_BINARY,
  agentClisFromEnv,
  agentboxHome,
  buildImage,
  chooseAccel,
  hostTscKhz,
  loadImage,
  parseAccelSetting,
  runCommand,
  type AccelVerdict,
  type AgentCli,
  type BuildResult,
  type Image,
} from '@agentbox/vm';
import { AGENT_VERSION } from '@agentbox/guest';
import { progressReporter } from './progress.js';

/** The bundled guest agent that goes into images. */
export function agentBundlePath(): string {
  const require = createRequire(import.meta.url);
  const bundle = require.resolve('@agentbox/guest/agent.cjs');
  if (!fs.existsSync(bundle)) {
    throw new AgentboxError(
      'image_missing',
      `guest agent bundle ${bundle} is missing; run \`npm run build\``,
    );
  }
  return bundle;
}

/** The guest's native addon that goes into images, when this machine could build it (it needs a C compiler). */
export function nativeAddonPath(): string | undefined {
  const addon = createRequire(import.meta.url).resolve('@agentbox/guest/agentbox.node');
  return fs.existsSync(addon) ? addon : undefined;
}

export async function qemuVersion(): Promise<string | undefined> {
  try {
    const { stdout } = await runCommand(QEMU_BINARY, ['--version']);
    return /version (\S+)/.exec(stdout)?.[1];
  } catch {
    return undefined;
  }
}

export function accelVerdict(home: string, image: Image | undefined): Promise<AccelVerdict> {
  return chooseAccel({
    setting: parseAccelSetting(process.env.AGENTBOX_ACCEL),
    home,
    cacheKey: `${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}|${image?.manifest.kernel.release ?? ''}`,
    // A probe boot under KVM is only reached on hosts whose CPU advertises VT-x/AMD-V.
    probeKvmBoot: async () => {
      if (!image) return false;
      const backend = new QemuBackend({ home, accel: 'kvm', tscKhz: undefined });
      const vm = await backend.create({
        id: `kvm-probe-${process.pid}`,
        image,
        resources: { memoryMib: 512, vcpus: 1, diskGib: 2 },
        bootTimeoutMs: 20_000,
      });
      try {
        await vm.start();
        await vm.guest.ping();
        return true;
      } finally {
        await vm.destroy();
      }
    },
  });
}

/**
 * Builds the image for this agentbox and agent set if it is missing (the first `run` on a fresh
 * machine). The agent set defaults to `$AGENTBOX_AGENTS` (comma list), else claude alone.
 */
export async function ensureImage(options: {
  home: string;
  agents?: readonly AgentCli[];
  force?: boolean;
  quiet?: boolean;
}): Promise<BuildResult> {
  const progress = progressReporter();
  const result = await buildImage({
    home: options.home,
    agentBundlePath: agentBundlePath(),
    ...(nativeAddonPath() ? { nativeAddonPath: nativeAddonPath() } : {}),
    agentVersion: AGENT_VERSION,
    agents: options.agents ?? agentClisFromEnv(),
    force: options.force ?? false,
    onProgress: (p) => {
      if (options.quiet && p.step === 'resolve') return;
      if (p.step === 'done') {
        if (!options.quiet) progress.done(p.message);
      } else {
        progress.update(p.index, p.total, p.message);
      }
    },
  });
  return result;
}

export interface Runtime {
  home: string;
  image: Image;
  accel: AccelVerdict;
  backend: QemuBackend;
}

/**
 * Everything needed to boot a box: QEMU present, the image (built on demand) for `agents` or
 * `$AGENTBOX_AGENTS`, the accelerator.
 */
export async function openRuntime(
  options: {
    quietImage?: boolean;
    agents?: readonly AgentCli[];
    /** An image the caller chose (`--image`): the default one is then not built or checked. */
    image?: (home: string) => Image;
  } = {},
): Promise<Runtime> {
  const home = agentboxHome();
  if ((await qemuVersion()) === undefined) {
    throw new AgentboxError(
      'prerequisite_missing',
      `${QEMU_BINARY} is not installed; run \`agentbox setup\``,
    );
  }
  const image = options.image
    ? options.image(home)
    : (
        await ensureImage({
          home,
          quiet: options.quietImage ?? true,
          ...(options.agents ? { agents: options.agents } : {}),
        })
      ).image;
  const accel = await accelVerdict(home, image);
  const backend = new QemuBackend({
    home,
    accel: accel.accel,
    tscKhz: accel.accel === 'tcg' ? hostTscKhz() : undefined,
  });
  return { home, image, accel, backend };
}

function sameAgents(image: Image, agents: readonly AgentCli[]): boolean {
  const held = Object.keys(image.manifest.agents).sort();
  return held.length === agents.length && [...agents].sort().every((a, i) => held[i] === a);
}

/**
 * The newest built image that holds exactly `agents` (default: `$AGENTBOX_AGENTS`, else claude),
 * without building; undefined if there is none. If the newest image is unreadable and none
 * matches, its error says how to fix it.
 */
export function findBuiltImage(
  home: string,
  agents: readonly AgentCli[] = agentClisFromEnv(),
): { image?: Image; error?: AgentboxError } {
  const dir = path.join(home, 'images');
  let candidates: string[];
  try {
    candidates = fs
      .readdirSync(dir)
      .filter((d) => !d.includes('.tmp'))
      .map((d) => path.join(dir, d))
      .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  } catch {
    return {};
  }
  let newestError: AgentboxError | undefined;
  for (const [i, candidate] of candidates.entries()) {
    try {
      const image = loadImage(candidate);
      if (sameAgents(image, agents)) return { image };
    } catch (err) {
      if (i === 0) newestError = err as AgentboxError;
    }
  }
  return newestError ? { error: newestError } : {};
}
