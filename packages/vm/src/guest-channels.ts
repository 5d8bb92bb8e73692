import type { Duplex } from 'node:stream';
import { ChannelResetSchema, EgressOpenSchema, type EgressOpen } from '@agentbox/protocol';
import type { Mux } from '@agentbox/protocol/wire';
import { ChannelDuplex, type InboundBudget } from './channel-duplex.js';

/** Receives each egress connection the guest opens (one client of the in-box proxy). */
export type EgressHandler = (stream: Duplex, meta: EgressOpen) => void;

/** Channels a guest may hold at once: each costs a stream and an HTTP parser on the host. */
export const MAX_GUEST_CHANNELS = 256;
/**
 * Refusals (a reset frame each) waiting to be written; past it opens are dropped unanswered. One
 * read of the stream holds at most ~1,400 opens, so only a guest that stopped reading loses any.
 */
export const MAX_PENDING_REFUSALS = 4096;
/**
 * Bytes the guest may have sent on its channels past what their readers (upstream connections)
 * have taken, all channels together: each may hold its 4 MiB window, which 256 would make 1 GiB.
 * Past it the channel holding the most is reset: 16 uploads stalled at a full window fit, and a
 * small request that stalls briefly is never the one cut. Readers that keep up hold ~16 KiB each.
 */
export const MAX_GUEST_INBOUND_BYTES = 64 * 1024 * 1024;

/** What a box with no egress handler answers: egress is off, and says so to the client. */
const EGRESS_DISABLED_BODY = 'agentbox: network egress is disabled for this box\n';
const EGRESS_DISABLED_RESPONSE =
  'HTTP/1.1 403 Forbidden\r\nX-Agentbox-Deny: egress_disabled\r\nContent-Type: text/plain\r\nConnection: close\r\n' +
  `Content-Length: ${Buffer.byteLength(EGRESS_DISABLED_BODY)}\r\n\r\n${EGRESS_DISABLED_BODY}`;

const IGNORE = { onJson: () => undefined, onData: () => undefined, onEnd: () => undefined };

/** What the host does with a channel the guest opens. */
export type GuestOpenVerdict =
  | { action: 'accept' }
  /** Answered with a `reset` carrying `reason`, keeping no state once that frame is out. */
  | { action: 'refuse'; reason: string }
  /** Not answered: refusals already wait for a guest that does not read them. */
  | { action: 'drop' };

/**
 * Pure: the verdict on a guest's open, from whether it is one we serve (`valid`), how many
 * channels the guest already holds and how many refusals wait to be written.
 */
export function admitGuestOpen(state: {
  valid: boolean;
  held: number;
  pendingRefusals: number;
}): GuestOpenVerdict {
  if (state.valid && state.held < MAX_GUEST_CHANNELS) return { action: 'accept' };
  if (state.pendingRefusals >= MAX_PENDING_REFUSALS) return { action: 'drop' };
  return { action: 'refuse', reason: state.valid ? 'too many channels' : 'unknown channel type' };
}

/**
 * The channels a guest opens (its proxy's egress connections), bounded: a channel counts from its
 * open until the host holds nothing of it (stream closed, last frames written or dropped), and
 * past MAX_GUEST_CHANNELS opens are refused while the existing channels keep working.
 */
export class GuestChannels {
  private readonly live = new Map<number, ChannelDuplex>();
  private held = 0;
  private pendingRefusals = 0;
  private refusedCount = 0;
  private openCount = 0;
  private capNoticed = false;
  private egressHandler: EgressHandler | undefined;
  private inboundHeld = 0;
  private inboundResets = 0;
  private readonly inbound: InboundBudget = {
    add: (bytes) => {
      this.inboundHeld += bytes;
      while (this.inboundHeld > MAX_GUEST_INBOUND_BYTES && this.resetLargestHolder());
    },
    remove: (bytes) => {
      this.inboundHeld -= bytes;
    },
  };

  constructor(
    private readonly mux: Mux,
    /** Called when the guest reaches a bound (the caller reports each kind once). */
    private readonly onLimit: (limit: 'guest_channels' | 'inbound_bytes', message: string) => void,
  ) {}

  /** Opens the guest asked for so far, refused ones included (what its reader paces it by). */
  get opened(): number {
    return this.openCount;
  }

  /**
   * Channels the guest holds now, opens refused (or dropped) so far, bytes held for stalled
   * readers, and channels reset because those did not fit.
   */
  get stats(): { held: number; refused: number; inboundBytes: number; inboundResets: number } {
    return {
      held: this.held,
      refused: this.refusedCount,
      inboundBytes: this.inboundHeld,
      inboundResets: this.inboundResets,
    };
  }

  setEgressHandler(handler: EgressHandler | undefined): void {
    this.egressHandler = handler;
  }

  /** A Json frame on a guest channel the mux does not know: an open, or a late message. */
  accept(channel: number, message: unknown): void {
    if (ChannelResetSchema.safeParse(message).success) {
      // The guest let go of a channel the host closed: what still waits for it is dropped.
      this.mux.close(channel);
      return;
    }
    const open = EgressOpenSchema.safeParse(message);
    if (open.success) this.openCount++;
    const verdict = admitGuestOpen({
      valid: open.success,
      held: this.held,
      pendingRefusals: this.pendingRefusals,
    });
    if (verdict.action !== 'accept' || !open.success) {
      this.refusedCount++;
      if (open.success && !this.capNoticed) {
        this.capNoticed = true;
        this.onLimit(
          'guest_channels',
          `the guest opened more than ${MAX_GUEST_CHANNELS} channels at once: later opens are refused until it closes some`,
        );
      }
      if (verdict.action === 'refuse') this.refuse(channel, verdict.reason);
      return;
    }
    const stream = new ChannelDuplex(this.mux, channel, this.inbound);
    this.held++;
    this.live.set(channel, stream);
    void stream.released.then(() => this.held--);
    stream.on('error', () => undefined);
    stream.once('close', () => {
      if (this.live.get(channel) === stream) this.live.delete(channel);
    });
    if (!this.egressHandler) {
      stream.resume();
      stream.end(EGRESS_DISABLED_RESPONSE);
      return;
    }
    this.egressHandler(stream, open.data);
  }

  /** Resets the channel whose reader has the most waiting; false if none holds anything. */
  private resetLargestHolder(): boolean {
    let largest: ChannelDuplex | undefined;
    for (const stream of this.live.values())
      if (!stream.destroyed && stream.heldBytes > (largest?.heldBytes ?? 0)) largest = stream;
    if (!largest) return false;
    this.inboundResets++;
    this.onLimit(
      'inbound_bytes',
      `the guest sent more than ${MAX_GUEST_INBOUND_BYTES} bytes its channels' readers had not taken: ` +
        `channel ${largest.channel} (${largest.heldBytes} bytes waiting) was reset`,
    );
    largest.destroy(new Error('the guest sent more than the host holds for its stalled channels'));
    return true;
  }

  /** The mux closed `channel` (its queue overflowed): its stream goes too. */
  closed(channel: number, error: Error): void {
    this.live.get(channel)?.destroy(error);
  }

  /** The guest's side is gone (agent restart, re-attach, VM exit): every stream is torn down. */
  dropAll(error: Error): void {
    for (const stream of [...this.live.values()]) stream.destroy(error);
    this.live.clear();
  }

  /** Refuses without keeping state: the reset goes out (or is dropped) and the channel is forgotten. */
  private refuse(channel: number, reason: string): void {
    this.pendingRefusals++;
    this.mux.open(channel, IGNORE);
    const sent = this.mux.sendJson(channel, { type: 'reset', reason });
    this.mux.close(channel, { flush: true });
    const done = () => void this.pendingRefusals--;
    sent.then(done, done);
  }
}
