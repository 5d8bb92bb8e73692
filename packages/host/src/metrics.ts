import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BoxState } from '@agentbox/protocol';
import type { ExecOutcome } from './services/exec-service.js';

/** Prometheus metrics of one daemon instance (its own registry: no process-global state). */
export function createMetrics(options: {
  boxesByState: () => Record<BoxState, number>;
  readyClones: () => { pool: number; standby: number };
}) {
  const registry = new Registry();
  new Gauge({
    name: 'agentbox_boxes',
    help: 'Boxes in the store, by state.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      for (const [state, n] of Object.entries(options.boxesByState())) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'agentbox_ready_clones',
    help: 'Clones made ahead for the next create: paused in the warm pool, or the standby.',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const ready = options.readyClones();
      this.set({ kind: 'pool' }, ready.pool);
      this.set({ kind: 'standby' }, ready.standby);
    },
  });
  const boot = new Histogram({
    name: 'agentbox_box_boot_seconds',
    help: 'Time from create to a running box whose guest agent answered.',
    buckets: [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
    registers: [registry],
  });
  const execs = new Counter({
    name: 'agentbox_exec_total',
    help: 'Commands run in boxes, by outcome.',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const http = new Histogram({
    name: 'agentbox_http_request_duration_seconds',
    help: 'API latency by route and status (streams: until the response ended).',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });

  return {
    registry,
    observeBoot: (seconds: number) => boot.observe(seconds),
    countExec: (outcome: ExecOutcome) => execs.inc({ outcome }),
    observeHttp: (labels: { method: string; route: string; status: number }, seconds: number) =>
      http.observe({ ...labels, status: String(labels.status) }, seconds),
    render: () => registry.metrics(),
    contentType: registry.contentType,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
