import { randomBytes } from 'node:crypto';
import type { TaskSpec } from '@agentbox/protocol';
import { emptyOutcome, errorEvent, exitError, joinPath, lastLines, tailChars } from '../shared.js';
import type { AgentCommand, AgentExit, AgentRunner, StreamParser, TaskEventDraft } from '../types.js';

/**
 * `shell`: the prompt is a bash script. Up to SHELL_ARGV_MAX bytes it runs as `bash -c <script>`;
 * a longer one (Linux caps one argument at 128 KiB) is written to a file and run as `bash <file>`.
 * Not stdin: the script's own commands may read stdin. Each stdout line is a `text` event; exit 0
 * → completion (the output's last 64 KiB), otherwise error {code:'exit_nonzero', exitCode}.
 */

export const SHELL_ARGV_MAX = 64 * 1024;
const OUTPUT_KEPT = 64 * 1024;

export interface ShellCommandOptions {
  newScriptName?: () => string;
}

export function shellCommand(
  spec: TaskSpec,
  ctx: { cwd: string; home: string },
  options: ShellCommandOptions = {},
): AgentCommand {
  const env = { ...spec.envVars };
  if (Buffer.byteLength(spec.prompt) <= SHELL_ARGV_MAX) {
    return { argv: ['bash', '-c', spec.prompt], env, cwd: ctx.cwd, files: [] };
  }
  const name = (options.newScriptName ?? (() => `task-${randomBytes(6).toString('hex')}.sh`))();
  const path = joinPath(ctx.home, '.agentbox', 'scripts', name);
  return { argv: ['bash', path], env, cwd: ctx.cwd, files: [{ path, content: spec.prompt, mode: 0o700 }] };
}

export function shellParser(): StreamParser {
  const outcome = emptyOutcome();
  let output = '';
  return {
    line(text) {
      output = tailChars(`${output}${text}\n`, OUTPUT_KEPT);
      return [{ type: 'text', content: text, raw: text }];
    },
    end(exit: AgentExit): TaskEventDraft[] {
      outcome.text = output;
      if (exit.timedOut || exit.exitCode === null) {
        const event = exitError('the script', exit);
        const content = event.content as { code: 'timed_out' | 'no_result'; message: string };
        outcome.error = { code: content.code, message: content.message };
        return [event];
      }
      if (exit.exitCode === 0) {
        outcome.ok = true;
        return [{ type: 'completion', content: output }];
      }
      const stderr = exit.stderrTail.trim();
      const message = `the script exited with code ${exit.exitCode}${stderr === '' ? '' : `: ${lastLines(stderr, 20)}`}`;
      outcome.error = { code: 'exit_nonzero', message };
      return [errorEvent('exit_nonzero', message, { exitCode: exit.exitCode })];
    },
    outcome: () => ({ ...outcome }),
  };
}

export const shellRunner: AgentRunner = {
  kind: 'shell',
  command: (spec, ctx) => shellCommand(spec, ctx),
  parser: shellParser,
  // A script has no skills, agents or settings to read.
  materialize: () => [],
};
