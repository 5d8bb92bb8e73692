import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GuestService } from '../../src/service.js';
import { Host, transportTo, until } from '../helpers/host-end.js';

// A restarted daemon is a new host: it numbers its channels from 1 again, while what the old one
// started in the guest may still be running.
describe('a new host session', () => {
  let dir: string;
  let host: Host;
  let service: GuestService;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-session-'));
    service = new GuestService(
      transportTo((chunk) => host.mux.receive(chunk)),
      { exec: { cwd: dir } },
    );
    host = new Host((chunk) => service.mux.receive(chunk));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const reconnect = () => {
    host = new Host((chunk) => service.mux.receive(chunk));
    void host.mux.sendJson(0, { op: 'hello' });
  };

  it("never gets the old session's output or replies on a channel number it reuses", async () => {
    host.open(1, { op: 'exec', argv: ['sh', '-c', 'sleep 0.3; echo old'] });
    await until(() => (host.json.get(1) ?? []).some((m) => (m as { type: string }).type === 'started'));
    reconnect();
    host.open(1, { op: 'exec', argv: ['sh', '-c', 'sleep 0.8; echo new'] });
    await until(() => (host.json.get(1) ?? []).some((m) => (m as { type: string }).type === 'exit'));
    expect(host.data.get(1)).toBe('new\n');
    expect((host.json.get(1) ?? []).map((m) => (m as { type: string }).type)).toEqual(['started', 'exit']);
  });

  it("cancels the old session's upload: its temporary file is removed, the old file kept", async () => {
    const file = path.join(dir, 'kept.txt');
    fs.writeFileSync(file, 'old');
    host.open(1, { op: 'file.write', path: file });
    void host.mux.sendData(1, 'data', Buffer.from('half of the new'));
    await until(() => fs.readdirSync(dir).some((n) => n.startsWith('.agentbox-')));
    reconnect();
    await until(() => fs.readdirSync(dir).length === 1);
    expect(fs.readFileSync(file, 'utf8')).toBe('old');
  });
});
