import type { AgentRunner } from '@agentbox/runners';
export const tmpShell: AgentRunner = {
  kind: 'shell',
  command: (spec, ctx) => ({ argv: ['bash', '-c', spec.prompt], env: {}, cwd: ctx.cwd, files: [] }),
  parser: () => {
    let code: number | null = null;
    return {
      line: (t) => [{ type: 'text', content: t, raw: t }],
      end: (e) => {
        code = e.exitCode;
        return e.exitCode === 0
          ? [{ type: 'completion', content: `exit ${e.exitCode}` }]
          : [{ type: 'error', content: { code: 'exit', message: String(e.exitCode) } }];
      },
      outcome: () => ({
        ok: code === 0,
        sessionId: null,
        numTurns: null,
        costUsd: null,
        usage: null,
        text: null,
      }),
    };
  },
  materialize: () => [],
};
