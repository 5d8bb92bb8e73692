import net from 'node:net';
import { ChannelResetSchema, GUEST_CHANNEL_BIT, GUEST_PROXY_PORT } from '@agentbox/protocol';
import type { Mux } from '@agentbox/protocol/wire';

/** Port of the egress proxy on the guest loopback; HTTP(S)_PROXY points here. */
export const EGRESS_PROXY_PORT = GUEST_PROXY_PORT;
/** Bytes read from a client that may wait for the channel before the client is paused. */
const MAX_QUEUED_UPLOAD_BYTES = 1024 * 1024;

/**
 * The guest half of egress: a loopback listener whose every connection becomes a channel to the
 * host, carrying the client's bytes unmodified both ways. It understands nothing of HTTP: the
 * host's gateway speaks the proxy protocol, applies the policy and holds every credential, so no
 * decision (and no secret) lives in the box.
 */
export class EgressProxy {
  private nextChannel = 1;
  private readonly sockets = new Map<number, net.Socket>();
  private server: net.Server | undefined;

  constructor(private readonly mux: Mux) {}

  listen(port: number, host = '127.0.0.1'): Promise<number> {
    // Half-open: a client that finished sending (FIN) still reads the response.
    const server = net.createServer({ allowHalfOpen: true }, (socket) => this.relay(socket));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve((server.address() as net.AddressInfo).port));
    });
  }

  /** The host went away: every relayed connection is cut. */
  resetAll(): void {
    for (const socket of this.sockets.values()) socket.destroy();
    this.sockets.clear();
  }

  close(): void {
    this.resetAll();
    this.server?.close();
  }

  private allocate(): number {
    const channel = (GUEST_CHANNEL_BIT | this.nextChannel) >>> 0;
    this.nextChannel = this.nextChannel >= 0x7fff_ffff ? 1 : this.nextChannel + 1;
    return channel;
  }

  private relay(socket: net.Socket): void {
    const channel = this.allocate();
    this.sockets.set(channel, socket);
    let closed = false;
    const teardown = (notifyHost: boolean) => {
      if (closed) return;
      closed = true;
      this.sockets.delete(channel);
      if (notifyHost) this.mux.sendJson(channel, { type: 'reset' }).catch(() => undefined);
      this.mux.close(channel, { flush: true });
      socket.destroy();
    };
    this.mux.open(channel, {
      onJson: (message) => {
        if (ChannelResetSchema.safeParse(message).success) teardown(false);
      },
      onData: (_stream, chunk) => {
        socket.write(chunk, () => this.mux.consumed(channel, chunk.length));
      },
      onEnd: () => socket.end(),
    });
    this.mux
      .sendJson(channel, { type: 'egress', clientPort: socket.remotePort ?? 0 })
      .catch(() => teardown(false));

    let queued = 0;
    socket.on('data', (chunk: Buffer) => {
      queued += chunk.length;
      if (queued > MAX_QUEUED_UPLOAD_BYTES) socket.pause();
      this.mux.sendData(channel, 'data', chunk).then(
        () => {
          queued -= chunk.length;
          if (queued <= MAX_QUEUED_UPLOAD_BYTES) socket.resume();
        },
        () => teardown(false),
      );
    });
    socket.on('end', () => {
      if (!closed) this.mux.sendEnd(channel).catch(() => undefined);
    });
    socket.on('error', () => teardown(true));
    // Closed both ways (or destroyed): the host side, if still open, is told to let go.
    socket.on('close', () => teardown(true));
  }
}
