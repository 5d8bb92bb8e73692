import { spawn } from 'node:child_process';
import { AgentboxError } from '@agentbox/protocol';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface CommandOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with each line of stderr+stdout, e.g. to show progress. */
  onLine?: (line: string) => void;
}

/** Runs a host tool to completion; a missing tool or non-zero exit becomes an AgentboxError that says what failed. */
export function runCommand(
  command: string,
  args: string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let partial = '';
    const lines = (chunk: Buffer) => {
      if (!options.onLine) return;
      const text = partial + chunk.toString('utf8');
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) options.onLine(line);
    };
    child.stdout.on('data', (c: Buffer) => (out.push(c), lines(c)));
    child.stderr.on('data', (c: Buffer) => (err.push(c), lines(c)));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'ENOENT'
          ? new AgentboxError('prerequisite_missing', `${command} is not installed; run \`agentbox setup\``)
          : new AgentboxError('internal', `could not run ${command}: ${e.message}`, { cause: e }),
      );
    });
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) return resolve({ stdout, stderr });
      const tail = (stderr || stdout).trim().split('\n').slice(-8).join('\n');
      reject(
        new AgentboxError(
          'internal',
          `${command} ${args.slice(0, 3).join(' ')}… failed (${signal ?? `exit ${code}`}): ${tail}`,
        ),
      );
    });
  });
}
