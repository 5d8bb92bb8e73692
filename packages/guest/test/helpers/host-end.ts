import { Mux, type Transport } from '@agentbox/protocol/wire';

/** A host end of the channel: its own mux, and what arrived on each channel. */
export class Host {
  readonly mux: Mux;
  readonly json = new Map<number, unknown[]>();
  /** stdout (and everything but stderr) by channel. */
  readonly data = new Map<number, string>();
  readonly stderr = new Map<number, string>();

  constructor(toGuest: (chunk: Buffer) => void) {
    this.mux = new Mux(transportTo(toGuest));
  }

  /**
   * Opens a channel with a request; `stdin`, when given, follows it, then its end. With `hold`,
   * no data is acknowledged: a reader that stalls once the window is full.
   */
  open(channel: number, request: unknown, stdin?: string, options: { hold?: boolean } = {}): void {
    this.mux.open(channel, {
      onJson: (m) => this.json.set(channel, [...(this.json.get(channel) ?? []), m]),
      onData: (stream, chunk) => {
        const into = stream === 'stderr' ? this.stderr : this.data;
        into.set(channel, (into.get(channel) ?? '') + chunk.toString());
        if (!options.hold) this.mux.consumed(channel, chunk.length);
      },
      onEnd: () => undefined,
    });
    void this.mux.sendJson(channel, request);
    if (stdin !== undefined) {
      void this.mux.sendData(channel, 'data', Buffer.from(stdin));
      void this.mux.sendEnd(channel);
    }
  }

  /** The types of the JSON messages the channel got, in order. */
  types(channel: number): string[] {
    return (this.json.get(channel) ?? []).map((m) => (m as { type: string }).type);
  }

  /** The channel's terminal message, once it came. */
  last(channel: number): Record<string, unknown> | undefined {
    const messages = this.json.get(channel) ?? [];
    const last = messages[messages.length - 1] as Record<string, unknown> | undefined;
    return last && ['exit', 'error', 'result'].includes(last.type as string) ? last : undefined;
  }
}

export function transportTo(receive: (chunk: Buffer) => void): Transport {
  return {
    write: (chunks) => {
      const bytes = Buffer.concat(chunks);
      setImmediate(() => receive(bytes));
      return true;
    },
    drained: () => Promise.resolve(),
  };
}

export const until = async (what: () => boolean, ms = 5000) => {
  for (const end = Date.now() + ms; !what();) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};
