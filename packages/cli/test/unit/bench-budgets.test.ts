import { describe, expect, it } from 'vitest';
import { foundationBudgets } from '../../src/commands/bench.js';

describe('bench budgets', () => {
  const figures = {
    coldBootMs: 2558,
    pingRttMs: 0.85,
    execTrueMs: 6.2,
    execFloorMs: 2.9,
    downloadMBps: 187.8,
    stdoutMBps: 39.9,
  };

  it('checks each foundation figure against its limit, in the right direction', () => {
    const b = foundationBudgets(figures);
    expect(b.coldBootMs).toEqual({ value: 2558, limit: 6000, ok: true });
    expect(b.pingRttMs).toEqual({ value: 0.85, limit: 1, ok: true });
    expect(b.execTrueMsVsFloor).toEqual({ value: 2.14, limit: 1.5, ok: false });
    expect(b.downloadMBps!.ok).toBe(true);
    expect(b.stdoutMBps).toEqual({ value: 39.9, limit: 40, ok: false });
  });

  it('counts a figure exactly at its limit as met', () => {
    const b = foundationBudgets({ ...figures, pingRttMs: 1, execTrueMs: 4.35, stdoutMBps: 40 });
    expect([b.pingRttMs!.ok, b.execTrueMsVsFloor!.ok, b.stdoutMBps!.ok]).toEqual([true, true, true]);
  });
});
