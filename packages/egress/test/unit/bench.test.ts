import { describe, expect, it } from 'vitest';
import { benchEgress } from '../../src/index.js';

describe('benchEgress', () => {
  it('measures direct vs gateway latency and throughput on loopback', async () => {
    const result = await benchEgress({ requests: 15, payloadBytes: 4 * 1024 * 1024 });
    expect(result.requests).toBe(15);
    for (const series of [result.connectLatencyMs, result.requestLatencyMs]) {
      expect(series.direct).toBeGreaterThan(0);
      expect(series.proxied).toBeGreaterThan(0);
      expect(series.added).toBeCloseTo(series.proxied - series.direct, 2);
    }
    for (const rate of Object.values(result.throughputMBps)) expect(rate).toBeGreaterThan(1);
  });
});
