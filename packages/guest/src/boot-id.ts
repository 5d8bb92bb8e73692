import { randomUUID } from 'node:crypto';
import fs from 'node:fs';

/** The kernel's boot id: a new one on every boot (and a clone's own after its restore). */
export function bootId(): string {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return randomUUID();
  }
}
