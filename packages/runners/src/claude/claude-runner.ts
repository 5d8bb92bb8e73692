import type { AgentRunner } from '../types.js';
import { claudeCommand } from './claude-command.js';
import { materializeForClaude } from './claude-library.js';
import { claudeParser } from './claude-parser.js';

export const claudeRunner: AgentRunner = {
  kind: 'claude',
  command: (spec, ctx) => claudeCommand(spec, ctx),
  parser: claudeParser,
  materialize: materializeForClaude,
};
