import fs from 'node:fs';
import v8 from 'node:v8';
import { GUEST_AGENT_DIR, GUEST_HELLO_MARK, GUEST_PORT_NAME } from '@agentbox/protocol';
import { connectUnixSocket, findVirtioPort, openVirtioPort, type GuestLink } from './transport.js';
import { openRawPort } from './raw-port.js';
import { loadNative, type NativeAddon } from './native.js';
import { GuestService } from './service.js';
import { EGRESS_PROXY_PORT } from './egress-proxy.js';
import { AGENT_VERSION } from './version.js';

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

async function openPort(native: NativeAddon | undefined): Promise<GuestLink> {
  const path = await findVirtioPort(GUEST_PORT_NAME);
  return openRawPort(path, native) ?? openVirtioPort(path);
}

async function main(argv: string[]): Promise<void> {
  // The image builder checks a freshly made startup snapshot with this.
  if (argv.includes('--version')) {
    process.stdout.write(`${AGENT_VERSION}\n`);
    return;
  }
  const connectAt = argv.indexOf('--connect');
  inVm = connectAt < 0;
  markBoot('guest agent started');
  const nativeAt = argv.indexOf('--native');
  const nativeAddonPath =
    nativeAt >= 0 ? argv[nativeAt + 1] : inVm ? `${GUEST_AGENT_DIR}/agentbox.node` : undefined;
  const native = nativeAddonPath ? loadNative(nativeAddonPath) : undefined;
  const link: GuestLink =
    connectAt >= 0 && argv[connectAt + 1]
      ? connectUnixSocket(argv[connectAt + 1]!, native)
      : await openPort(native);
  const versionAt = argv.indexOf('--protocol-version');
  const journalAt = argv.indexOf('--journal-root');
  const service = new GuestService(link, {
    privileged: inVm,
    ...(journalAt >= 0 && argv[journalAt + 1] ? { journalRoot: argv[journalAt + 1] } : {}),
    ...(versionAt >= 0 ? { protocolVersion: Number(argv[versionAt + 1]) } : {}),
    ...(native ? { native } : {}),
  });
  service.resumeJournals();
  const proxyAt = argv.indexOf('--proxy-port');
  await service.startEgressProxy(proxyAt >= 0 ? Number(argv[proxyAt + 1]) : EGRESS_PROXY_PORT);
  const running = link.start(
    (chunk) => service.mux.receive(chunk),
    () => service.hostReconnected(),
  );
  await service.sendHello();
  markBoot(`guest agent said hello (pid ${process.pid})`);
  if (inVm) {
    try {
      fs.writeFileSync(GUEST_HELLO_MARK, `${process.pid}\n`);
    } catch {
      // init.sh then falls back to the plain bundle after this agent exits; nothing else depends on it
    }
  }
  await running;
}

function run(args: string[]): void {
  process.on('SIGPIPE', () => undefined);
  // A clean exit on SIGTERM (init's stop; also flushes --cpu-prof when profiling the agent).
  process.on('SIGTERM', () => process.exit(0));
  main(args)
    .then(() => process.exit(0))
    .catch((err: unknown) => {
      process.stderr.write(`agentbox-guest: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    });
}

// Built into a V8 startup snapshot (the image does this), the bundle's modules are evaluated at
// build time and `run` is what a start from the snapshot executes: under emulation, evaluating the
// bundle (zod schemas above all) is seconds of every cold boot. Started from a snapshot, argv
// has no script path.
if (v8.startupSnapshot.isBuildingSnapshot())
  v8.startupSnapshot.setDeserializeMainFunction(() => run(process.argv.slice(1)));
else run(process.argv.slice(2));
