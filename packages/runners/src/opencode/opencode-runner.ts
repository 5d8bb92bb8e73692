import type { AgentRunner } from '../types.js';
import { opencodeCommand } from './opencode-command.js';
import { materializeForOpencode } from './opencode-library.js';
import { opencodeParser } from './opencode-parser.js';

export const opencodeRunner: AgentRunner = {
  kind: 'opencode',
  command: opencodeCommand,
  parser: opencodeParser,
  materialize: materializeForOpencode,
};
