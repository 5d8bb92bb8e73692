import type { AgentDefinition, TaskSpec } from '@agentbox/protocol';
import { joinPath, promptWithTranscript, yamlString } from '../shared.js';
import type { AgentCommand, GuestFile, RunnerContext } from '../types.js';

/**
 * `opencode run --format json` (1.18.33), prompt on stdin, Anthropic provider at its default
 * endpoint (api.anthropic.com, reached through the egress gateway). Run-time config goes in
 * OPENCODE_CONFIG_CONTENT (highest precedence, no file): the model is declared there so any model
 * id works without the models.dev catalog (whose fetch is turned off), and tool limits go there too.
 */

export const OPENCODE_ENV: Readonly<Record<string, string>> = {
  OPENCODE_DISABLE_MODELS_FETCH: '1',
  OPENCODE_DISABLE_AUTOUPDATE: '1',
  OPENCODE_DISABLE_SHARE: '1',
  OPENCODE_DISABLE_LSP_DOWNLOAD: '1',
};

export const DEFAULT_OPENCODE_MODEL = 'anthropic/claude-sonnet-4-5';

/** `provider/model`; a bare model id is taken to be Anthropic's. */
export function opencodeModel(model: string | undefined): { provider: string; model: string } {
  const full = model ?? DEFAULT_OPENCODE_MODEL;
  const slash = full.indexOf('/');
  return slash < 0
    ? { provider: 'anthropic', model: full }
    : { provider: full.slice(0, slash), model: full.slice(slash + 1) };
}

/** OpenCode's tool names are lower case and take no patterns: `Bash(git *)` → `bash`. */
export function opencodeToolName(tool: string): string {
  return tool.replace(/\(.*$/s, '').trim().toLowerCase();
}

/** The `tools` switch map of an allow list (everything else off) and a deny list. */
export function opencodeTools(
  allowed: readonly string[] | undefined,
  denied: readonly string[] | undefined,
): Record<string, boolean> | undefined {
  const tools: Record<string, boolean> = {};
  if (allowed !== undefined && allowed.length > 0) {
    tools['*'] = false;
    for (const tool of allowed) tools[opencodeToolName(tool)] = true;
  }
  for (const tool of denied ?? []) tools[opencodeToolName(tool)] = false;
  return Object.keys(tools).length > 0 ? tools : undefined;
}

export function opencodeAgentPath(home: string, name: string): string {
  return joinPath(home, '.config', 'opencode', 'agents', `${name}.md`);
}

/** An OpenCode agent file: frontmatter (description, mode, model, tools) and the prompt as the body. */
export function opencodeAgentMarkdown(def: AgentDefinition): string {
  const lines = ['---', `description: ${yamlString(def.description ?? `Agent ${def.name}`)}`, 'mode: all'];
  if (def.model !== undefined) {
    const { provider, model } = opencodeModel(def.model);
    lines.push(`model: ${yamlString(`${provider}/${model}`)}`);
  }
  const tools = opencodeTools(def.tools, def.disallowedTools);
  if (tools !== undefined) {
    lines.push('tools:');
    for (const [name, on] of Object.entries(tools)) lines.push(`  ${yamlString(name)}: ${on}`);
  }
  lines.push('---', '');
  const body = def.systemPrompt?.trim();
  return `${lines.join('\n')}${body === undefined || body === '' ? `You are ${def.name}.` : body}\n`;
}

export function opencodeCommand(spec: TaskSpec, ctx: RunnerContext): AgentCommand {
  const def = ctx.agentDefinition;
  const { provider, model } = opencodeModel(spec.model ?? def?.model);
  const argv = ['opencode', 'run', '--format', 'json', '--pure', '--auto', '--model', `${provider}/${model}`];
  // A variant applies when the model defines one by that name (claude-sonnet-4-5: high, max).
  if (spec.effort !== 'low') argv.push('--variant', spec.effort);
  const files: GuestFile[] = [];
  if (def !== undefined) {
    files.push({ path: opencodeAgentPath(ctx.home, def.name), content: opencodeAgentMarkdown(def) });
    argv.push('--agent', def.name);
  }
  let prompt = spec.prompt;
  if (ctx.resumeSessionId !== undefined) argv.push('--session', ctx.resumeSessionId);
  else prompt = promptWithTranscript(spec.context, spec.prompt);

  const tools = opencodeTools(spec.allowedTools, spec.disallowedTools);
  const config = {
    provider: { [provider]: { models: { [model]: {} } } },
    ...(tools === undefined ? {} : { tools }),
  };
  const env = { ...OPENCODE_ENV, OPENCODE_CONFIG_CONTENT: JSON.stringify(config), ...spec.envVars };
  return { argv, env, cwd: ctx.cwd, stdin: prompt, files };
}
