import { randomBytes } from 'node:crypto';
import type { TaskSpec } from '@agentbox/protocol';
import { joinPath, promptWithTranscript } from '../shared.js';
import { tomlTable, tomlValue } from '../toml.js';
import type { AgentCommand, RunnerContext } from '../types.js';

/**
 * `codex exec --json` (0.169.0), prompt on stdin (`-`), settings in a per-task profile file
 * (`--profile`, `$CODEX_HOME/<name>.config.toml`) so a long system prompt never meets the argv limit.
 *
 * The model provider is our own definition of OpenAI's endpoint, the same URL as the built-in one
 * but with WebSockets off: the built-in provider tries a WebSocket first, which the egress gateway
 * refuses, and spends five retries (seconds) before falling back to HTTPS.
 */

export const CODEX_PROVIDER_ID = 'agentbox-openai';
export const OPENAI_BASE_URL = 'https://api.openai.com/v1';

export interface CodexCommandOptions {
  /** Profile names; default `agentbox-<random>`. */
  newProfileName?: () => string;
}

export function codexProfile(spec: TaskSpec, ctx: RunnerContext): string {
  const def = ctx.agentDefinition;
  const top: string[] = [`model_provider = ${tomlValue(CODEX_PROVIDER_ID)}`];
  top.push(`model_reasoning_effort = ${tomlValue(spec.effort)}`);
  const model = spec.model ?? def?.model;
  if (model !== undefined) top.push(`model = ${tomlValue(model)}`);
  if (def?.systemPrompt !== undefined) top.push(`developer_instructions = ${tomlValue(def.systemPrompt)}`);
  const provider = tomlTable(['model_providers', CODEX_PROVIDER_ID], {
    name: 'OpenAI',
    base_url: OPENAI_BASE_URL,
    env_key: 'OPENAI_API_KEY',
    wire_api: 'responses',
    supports_websockets: false,
  });
  // Off: what would only reach hosts the box may not (update check, plugin and app sync on
  // github.com / chatgpt.com, analytics); each attempt is otherwise a denied egress record.
  top.push('check_for_update_on_startup = false');
  const features = tomlTable(['features'], { plugins: false, apps: false, remote_plugin: false });
  const analytics = tomlTable(['analytics'], { enabled: false });
  return `${top.join('\n')}\n\n${features}\n${analytics}\n${provider}`;
}

export function codexCommand(
  spec: TaskSpec,
  ctx: RunnerContext,
  options: CodexCommandOptions = {},
): AgentCommand {
  const profile = (options.newProfileName ?? (() => `agentbox-${randomBytes(4).toString('hex')}`))();
  const argv = [
    'codex',
    'exec',
    '--json',
    '--skip-git-repo-check',
    '--dangerously-bypass-approvals-and-sandbox',
    '--profile',
    profile,
  ];
  let prompt = spec.prompt;
  if (ctx.resumeSessionId !== undefined) argv.push('resume', ctx.resumeSessionId);
  else prompt = promptWithTranscript(spec.context, spec.prompt);
  argv.push('-');
  return {
    argv,
    env: { ...spec.envVars },
    cwd: ctx.cwd,
    stdin: prompt,
    files: [
      { path: joinPath(ctx.home, '.codex', `${profile}.config.toml`), content: codexProfile(spec, ctx) },
    ],
  };
}
