import { InvalidArgumentError, Option } from 'commander';
import { CreateBoxRequestSchema } from '@agentbox/protocol';
import type { VmResources } from '@agentbox/vm';

export function intOption(name: string, min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${name} must be a whole number`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be between ${min} and ${max}`);
    return n;
  };
}

type ResourceField = keyof VmResources;

/** A resource's bounds as the daemon validates them, so no box size is valid in one place only. */
function bounds(field: ResourceField): { min: number; max: number } {
  const { minValue: min, maxValue: max } = CreateBoxRequestSchema.shape[field].unwrap();
  // An unbounded z.number().int() reports ±MAX_SAFE_INTEGER: a flag would then take nonsense.
  if (min === null || max === null || min < 0 || max >= Number.MAX_SAFE_INTEGER)
    throw new Error(`CreateBoxRequestSchema.${field} has no min and max for the CLI to use`);
  return { min, max };
}

export const RESOURCE_LIMITS: Readonly<Record<ResourceField, { min: number; max: number }>> = {
  memoryMib: bounds('memoryMib'),
  vcpus: bounds('vcpus'),
  diskGib: bounds('diskGib'),
};

/**
 * Defaults of a project box (`agentbox claude|codex|opencode|shell`): an agent and the project's
 * tools live in it for hours, unlike `run`'s one command. A change replaces existing project boxes
 * (their config includes the resources).
 */
export const PROJECT_RESOURCES: VmResources = { memoryMib: 2048, vcpus: 2, diskGib: 8 };

/** The values of the flags `resourceOptions` adds. */
export interface ResourceFlags {
  memory: number;
  cpus: number;
  disk: number;
}

/** `--memory`, `--cpus` and `--disk` of every command that makes a box: only the defaults differ. */
export function resourceOptions(defaults: VmResources): Option[] {
  const flag = (flags: string, what: string, field: ResourceField, unit: string) => {
    const { min, max } = RESOURCE_LIMITS[field];
    const name = flags.split(' ')[0]!;
    return new Option(flags, `${what}, ${min} to ${max}${unit}`)
      .argParser(intOption(name, min, max))
      .default(defaults[field]);
  };
  return [
    flag('--memory <MiB>', 'guest memory', 'memoryMib', ' MiB'),
    flag('--cpus <N>', 'virtual CPUs', 'vcpus', ''),
    flag('--disk <GiB>', 'disk size', 'diskGib', ' GiB'),
  ];
}

export function resourcesOf(flags: ResourceFlags): VmResources {
  return { memoryMib: flags.memory, vcpus: flags.cpus, diskGib: flags.disk };
}
