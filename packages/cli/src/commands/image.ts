import {
  AGENT_CLIS,
  agentClisFromEnv,
  agentboxHome,
  applyPrune,
  planPrune,
  type AgentCli,
} from '@agentbox/vm';
import { writeJson } from '../output.js';
import { ensureImage, findBuiltImage } from '../runtime.js';

export async function imageBuild(options: {
  force: boolean;
  json: boolean;
  agents?: AgentCli[];
}): Promise<number> {
  const { image, built } = await ensureImage({
    home: agentboxHome(),
    force: options.force,
    quiet: options.json,
    ...(options.agents ? { agents: options.agents } : {}),
  });
  if (options.json) writeJson({ built, dir: image.dir, manifest: image.manifest });
  else process.stdout.write(`${image.manifest.id} ${image.dir}\n`);
  return 0;
}

/** `claude 2.1.330 (@anthropic-ai/claude-code), codex …` */
export function formatAgents(agents: Partial<Record<AgentCli, string>>): string {
  const entries = Object.entries(agents) as [AgentCli, string][];
  if (entries.length === 0) return 'none';
  return entries.map(([name, version]) => `${name} ${version} (${AGENT_CLIS[name].npmPackage})`).join(', ');
}

export function imageShow(options: { json: boolean; agents?: AgentCli[] }): number {
  const agents = options.agents ?? agentClisFromEnv();
  const { image, error } = findBuiltImage(agentboxHome(), agents);
  if (error) throw error;
  if (!image) {
    const list = agents.join(',');
    process.stderr.write(
      `agentbox: no image with agents ${list} has been built; run \`agentbox image build --agents ${list}\`\n`,
    );
    return 1;
  }
  if (options.json) writeJson(image.manifest);
  else {
    const m = image.manifest;
    process.stdout.write(
      [
        `id:       ${m.id}`,
        `dir:      ${image.dir}`,
        `built:    ${m.builtAt} in ${m.buildSeconds}s`,
        `kernel:   ${m.kernel.package} ${m.kernel.version}`,
        `agent:    ${m.agent.version} (${m.agent.sha256.slice(0, 12)})`,
        `agents:   ${formatAgents(m.agents)}`,
        `node:     ${m.components['node'] ?? '?'}`,
        `rootfs:   ${(m.sizes.rootfsBytes / 2 ** 20).toFixed(0)} MiB, ${Object.keys(m.components).length} packages`,
      ].join('\n') + '\n',
    );
  }
  return 0;
}

const MiB = 2 ** 20;

const KEEP_REASONS = {
  newest: 'the newest with its agents',
  disk: "a box's disk is backed by it",
  process: 'a running process uses it',
} as const;

export async function imagePrune(options: { dryRun: boolean; json: boolean }): Promise<number> {
  const plan = planPrune(agentboxHome());
  if (!options.dryRun) await applyPrune(plan);
  if (options.json) {
    writeJson({ removed: !options.dryRun, ...plan });
    return 0;
  }
  const lines = plan.kept.map((k) => `keep    image ${k.id} (${k.agents}): ${KEEP_REASONS[k.reason]}`);
  for (const item of plan.remove) {
    const size = `${(item.bytes / MiB).toFixed(0)} MiB`;
    lines.push(
      `${options.dryRun ? 'would remove' : 'removed'} ${item.kind} ${item.path}${item.detail ? ` (${item.detail})` : ''}: ${size}`,
    );
  }
  const total = `${(plan.bytes / MiB).toFixed(0)} MiB`;
  lines.push(
    plan.remove.length === 0
      ? 'nothing to remove'
      : `${options.dryRun ? 'would free' : 'freed'} ${total} in ${plan.remove.length} item(s)`,
  );
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
