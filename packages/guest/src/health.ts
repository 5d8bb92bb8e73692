import fs from 'node:fs';
import os from 'node:os';
import type { Health } from '@agentbox/protocol';

function meminfo(key: string): number {
  const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}

export function health(): Health {
  const disk = fs.statfsSync('/');
  return {
    uptimeSeconds: os.uptime(),
    loadAverage: os.loadavg(),
    memTotalBytes: meminfo('MemTotal'),
    memAvailableBytes: meminfo('MemAvailable'),
    diskTotalBytes: disk.blocks * disk.bsize,
    diskFreeBytes: disk.bavail * disk.bsize,
    processes: fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n)).length,
  };
}
