import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { fakeHost, type FakeHost } from '../../../host/test/helpers/fake-host.js';
import type { HostOptions } from '../../../host/src/index.js';

export interface SdkDaemon {
  fake: FakeHost;
  /** The daemon, listening on a port (the real fastify server over the fake driver). */
  url: string;
  /** The same daemon behind a TCP relay whose connections the test can cut. */
  proxyUrl: string;
  /** Destroys every connection through the relay (as a crashed proxy or network would). */
  cutConnections(): number;
  /** Connections the relay has accepted so far. */
  connections(): number;
  admin: string;
  close(): Promise<void>;
}

/** A fake-driver daemon serving HTTP on 127.0.0.1, plus a relay to it for cutting streams. */
export async function sdkDaemon(options: Partial<HostOptions> = {}): Promise<SdkDaemon> {
  const fake = await fakeHost(options);
  await fake.host.app.listen({ port: 0, host: '127.0.0.1' });
  const port = (fake.host.app.server.address() as AddressInfo).port;
  const live = new Set<net.Socket>();
  let accepted = 0;
  const relay = net.createServer((client) => {
    accepted++;
    const upstream = net.connect(port, '127.0.0.1');
    live.add(client);
    live.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  const relayPort = (relay.address() as AddressInfo).port;
  return {
    fake,
    url: `http://127.0.0.1:${port}`,
    proxyUrl: `http://127.0.0.1:${relayPort}`,
    admin: fake.admin,
    connections: () => accepted,
    cutConnections() {
      const n = live.size;
      for (const socket of live) socket.destroy();
      live.clear();
      return n;
    },
    async close() {
      for (const socket of live) socket.destroy();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
      await fake.close();
    },
  };
}

/** A URL on which nothing listens (a port just released). */
export async function deadUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}
