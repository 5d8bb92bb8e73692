import type { AgentRunner } from '../types.js';
import { codexCommand } from './codex-command.js';
import { materializeForCodex } from './codex-library.js';
import { codexParser } from './codex-parser.js';

export const codexRunner: AgentRunner = {
  kind: 'codex',
  command: (spec, ctx) => codexCommand(spec, ctx),
  parser: codexParser,
  materialize: materializeForCodex,
};
