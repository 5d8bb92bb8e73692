import fs from 'node:fs';
import { GUEST_PORT_NAME } from '@agentbox/protocol';
import {
  connectUnixSocket,
  findVirtioPort,
  openVirtioPort,
  openVirtioStream,
  type GuestLink,
} from './transport.js';
import { GuestService } from './service.js';
import { EGRESS_PROXY_PORT } from './egress-proxy.js';

/**
 * Entry point of the guest agent. In a VM it is started by /sbin/agentbox-init (under tini, which
 * reaps orphans) and talks over the virtio-serial port; `--connect SOCKET` runs it on the host for
 * unit tests of the protocol.
 */
/** Boot milestones go to the kernel log, so `dmesg` shows one timeline from kernel to agent. */
let inVm = false;
function markBoot(message: string): void {
  if (!inVm) return;
  try {
    fs.writeFileSync('/dev/kmsg', `agentbox: ${message}\n`);
  } catch {
    // not in a VM (unit tests) or no permission
  }
}

async function openPort(): Promise<GuestLink> {
  const path = await findVirtioPort(GUEST_PORT_NAME);
  return openVirtioStream(path) ?? openVirtioPort(path);
}

async function main(argv: string[]): Promise<void> {
  const connectAt = argv.indexOf('--connect');
  inVm = connectAt < 0;
  markBoot('guest agent started');
  const link: GuestLink =
    connectAt >= 0 && argv[connectAt + 1] ? connectUnixSocket(argv[connectAt + 1]!) : await openPort();
  const versionAt = argv.indexOf('--protocol-version');
  const service = new GuestService(link, {
    privileged: inVm,
    ...(versionAt >= 0 ? { protocolVersion: Number(argv[versionAt + 1]) } : {}),
  });
  const proxyAt = argv.indexOf('--proxy-port');
  await service.startEgressProxy(proxyAt >= 0 ? Number(argv[proxyAt + 1]) : EGRESS_PROXY_PORT);
  const running = link.start(
    (chunk) => service.mux.receive(chunk),
    () => service.hostReconnected(),
  );
  await service.sendHello();
  markBoot(`guest agent said hello (pid ${process.pid})`);
  await running;
}

process.on('SIGPIPE', () => undefined);
// A clean exit on SIGTERM (init's stop; also flushes --cpu-prof when profiling the agent).
process.on('SIGTERM', () => process.exit(0));
main(process.argv.slice(2))
  .then(() => process.exit(0))
  .catch((err: unknown) => {
    process.stderr.write(`agentbox-guest: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
