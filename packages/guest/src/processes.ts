import fs from 'node:fs';
import type { ParsedRequest, ProcessInfo } from '@agentbox/protocol';
import { GuestOpError, errnoCode } from './context.js';

const PAGE_BYTES = 4096;

function userNames(): Map<number, string> {
  const names = new Map<number, string>();
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , uid] = line.split(':');
      if (name && uid) names.set(Number(uid), name);
    }
  } catch {
    // no passwd: numeric ids are shown
  }
  return names;
}

function readProcess(pid: number, users: Map<number, string>): ProcessInfo | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces and parens; the fields after the last ')' are fixed.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    return {
      pid,
      ppid: Number(fields[1]),
      user: users.get(uid) ?? String(uid),
      state: fields[0] ?? '?',
      rssBytes: Number(fields[21] ?? 0) * PAGE_BYTES,
      command: (cmdline || `[${comm}]`).slice(0, 4096),
    };
  } catch {
    return undefined; // exited while we looked
  }
}

export function listProcesses(): ProcessInfo[] {
  const users = userNames();
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map((name) => readProcess(Number(name), users))
    .filter((p): p is ProcessInfo => p !== undefined)
    .sort((a, b) => a.pid - b.pid);
}

export function killProcess(req: Extract<ParsedRequest, { op: 'process.kill' }>): Record<string, never> {
  if (req.pid === process.pid) throw new GuestOpError('invalid_request', 'refusing to kill the guest agent');
  try {
    process.kill(req.pid, req.signal);
    return {};
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ESRCH') throw new GuestOpError('process_not_found', `no process ${req.pid}`);
    if (code === 'ERR_UNKNOWN_SIGNAL')
      throw new GuestOpError('invalid_request', `unknown signal ${req.signal}`);
    throw new GuestOpError('guest_error', `kill ${req.pid}: ${(err as Error).message}`);
  }
}
