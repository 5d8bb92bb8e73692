import { describe, expect, it } from 'vitest';
import type { Option } from 'commander';
import { CreateBoxRequestSchema } from '@agentbox/protocol';
import { DEFAULT_RESOURCES } from '@agentbox/vm';
import { buildProgram } from '../../src/main.js';
import { PROJECT_RESOURCES, RESOURCE_LIMITS, resourceOptions, resourcesOf } from '../../src/options.js';

const FLAGS = { memoryMib: '--memory', vcpus: '--cpus', diskGib: '--disk' } as const;

describe('resource flags', () => {
  it("take the daemon's limits: the first and last values its create request accepts", () => {
    expect(RESOURCE_LIMITS).toEqual({
      memoryMib: { min: 128, max: 65536 },
      vcpus: { min: 1, max: 64 },
      diskGib: { min: 1, max: 2048 },
    });
    for (const [field, { min, max }] of Object.entries(RESOURCE_LIMITS)) {
      const accepts = (n: number) => CreateBoxRequestSchema.safeParse({ [field]: n }).success;
      expect([accepts(min - 1), accepts(min), accepts(max), accepts(max + 1)], field).toEqual([
        false,
        true,
        true,
        false,
      ]);
    }
  });

  it('are the same options in run and every project command; only the defaults differ', () => {
    const program = buildProgram(() => undefined);
    const describeOf = (name: string) => {
      const command = program.commands.find((c) => c.name() === name)!;
      return Object.values(FLAGS).map((flag) => {
        const o = command.options.find((x) => x.long === flag)!;
        return { flags: o.flags, description: o.description, default: o.defaultValue as unknown };
      });
    };
    const shared = (d: { flags: string; description: string }[]) =>
      d.map(({ flags, description }) => ({ flags, description }));
    const run = describeOf('run');
    expect(run.map((o) => o.default)).toEqual([
      DEFAULT_RESOURCES.memoryMib,
      DEFAULT_RESOURCES.vcpus,
      DEFAULT_RESOURCES.diskGib,
    ]);
    for (const agent of ['claude', 'codex', 'opencode', 'shell']) {
      const project = describeOf(agent);
      expect(shared(project), agent).toEqual(shared(run));
      expect(project.map((o) => o.default)).toEqual([
        PROJECT_RESOURCES.memoryMib,
        PROJECT_RESOURCES.vcpus,
        PROJECT_RESOURCES.diskGib,
      ]);
    }
    expect(run[0]!.description).toBe('guest memory, 128 to 65536 MiB');
  });

  it('parse whole numbers within the limits, and name the flag otherwise', () => {
    const [memory, cpus, disk] = resourceOptions(DEFAULT_RESOURCES) as [Option, Option, Option];
    const parse = (o: Option, value: string) => o.parseArg!<unknown>(value, undefined) as number;
    expect([parse(memory, '128'), parse(cpus, '64'), parse(disk, '2048')]).toEqual([128, 64, 2048]);
    expect(() => parse(memory, '127')).toThrow('--memory must be between 128 and 65536');
    expect(() => parse(cpus, '65')).toThrow('--cpus must be between 1 and 64');
    expect(() => parse(disk, '0')).toThrow('--disk must be between 1 and 2048');
    for (const bad of ['1.5', '-1', 'lots', '', '8G'])
      expect(() => parse(disk, bad), bad).toThrow('--disk must be a whole number');
    expect(resourcesOf({ memory: 640, cpus: 3, disk: 9 })).toEqual({ memoryMib: 640, vcpus: 3, diskGib: 9 });
  });
});
