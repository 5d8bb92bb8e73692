import { randomBytes } from 'node:crypto';
import { constants as osConstants } from 'node:os';
import { AgentboxError } from '@agentbox/protocol';
import type { Vm, VmResources } from '@agentbox/vm';
import { writeTo } from '../output.js';
import { PhaseTimer } from '../profile.js';
import { openRuntime } from '../runtime.js';

export interface RunOptions {
  resources: VmResources;
  env: Record<string, string>;
  workdir?: string;
  timeoutSeconds?: number;
  stdin: boolean;
  argv: string[];
  /** Boot the image even when a template of this size is built (default: clone the template). */
  cold?: boolean;
}

/** Exit status the way a shell reports it: the code, or 128 + signal number. */
export function shellExitStatus(exit: { exitCode: number | null; signal: string | null }): number {
  if (exit.exitCode !== null) return exit.exitCode;
  const signo = exit.signal ? (osConstants.signals as Record<string, number>)[exit.signal] : undefined;
  return 128 + (signo ?? 0);
}

/**
 * Starts a fresh box (a clone of the image's template when one is built, else a cold boot), runs
 * one command with stdout/stderr passed through, destroys the box.
 */
export async function runCommandInBox(options: RunOptions): Promise<number> {
  const timer = new PhaseTimer();
  let vm: Vm | undefined;
  let interrupted: NodeJS.Signals | undefined;
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = signal;
    abort.abort();
    // The box is torn down in `finally`; a second signal kills the VM right away.
    void vm?.kill();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    timer.phase('image');
    const runtime = await openRuntime();
    timer.phase('create');
    const spec = {
      id: `run-${randomBytes(5).toString('hex')}`,
      image: runtime.image,
      resources: options.resources,
    };
    // A template the daemon (or bench) built for this image and size: a clone of it is a fresh
    // machine too (new identity, clock and entropy) and starts in a fraction of a cold boot.
    // Never built here: that costs a cold boot and more, for one command.
    const template = options.cold
      ? undefined
      : await runtime.backend.findTemplate(runtime.image, spec.resources);
    if (template) {
      try {
        vm = await runtime.backend.create({ ...spec, restoreFrom: { kind: 'template', template } });
        timer.phase('boot');
        await vm.start();
        timer.note('start', 'clone');
      } catch (err) {
        if (interrupted) throw err;
        // A clone that did not start (its template pruned meanwhile, or not restorable): boot
        // instead. A template that does not restore is dropped; the next build replaces it.
        await vm?.destroy().catch(() => undefined);
        vm = undefined;
        if (err instanceof AgentboxError && err.code === 'snapshot_failed')
          await runtime.backend.discardTemplate(template).catch(() => undefined);
      }
    }
    if (!vm) {
      vm = await runtime.backend.create(spec);
      timer.phase('boot');
      await vm.start();
      timer.note('start', 'cold');
    }
    timer.phase('handshake');
    await vm.guest.ping();
    timer.phase('exec');
    const exit = await vm.guest.exec(
      {
        argv: options.argv,
        env: options.env,
        ...(options.workdir ? { cwd: options.workdir } : {}),
        ...(options.timeoutSeconds ? { timeoutMs: Math.round(options.timeoutSeconds * 1000) } : {}),
      },
      {
        onStdout: writeTo(process.stdout),
        onStderr: writeTo(process.stderr),
        signal: abort.signal,
        ...(options.stdin ? { stdin: process.stdin } : {}),
      },
    );
    if (exit.timedOut) {
      process.stderr.write(`agentbox: command timed out after ${options.timeoutSeconds}s and was killed\n`);
      return 124;
    }
    return shellExitStatus(exit);
  } catch (err) {
    if (interrupted) return shellExitStatus({ exitCode: null, signal: interrupted });
    throw err;
  } finally {
    timer.phase('teardown');
    await vm?.destroy().catch(() => undefined);
    if (options.stdin) process.stdin.destroy();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    timer.report();
  }
}

export function parseEnvPairs(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const key = eq > 0 ? pair.slice(0, eq) : '';
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new AgentboxError(
        'invalid_request',
        `--env expects KEY=VALUE with a valid variable name, got ${JSON.stringify(pair)}`,
      );
    }
    env[key] = pair.slice(eq + 1);
  }
  return env;
}
