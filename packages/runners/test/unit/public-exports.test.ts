import { describe, expect, it } from 'vitest';
import { AGENT_KINDS } from '@agentbox/protocol';
import * as runners from '../../src/index.js';

describe('@agentbox/runners public surface', () => {
  it('exports exactly these runtime names', () => {
    expect(Object.keys(runners).sort()).toEqual([
      'AGENT_ERROR_CODES',
      'claudeRunner',
      'codexRunner',
      'opencodeRunner',
      'runnerFor',
      'shellRunner',
    ]);
  });

  it('has a runner for every agent kind, of that kind', () => {
    for (const kind of AGENT_KINDS) expect(runners.runnerFor(kind).kind).toBe(kind);
  });
});
