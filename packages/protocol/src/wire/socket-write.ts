import type { Writable } from 'node:stream';
import type { Transport } from './mux.js';

/**
 * A mux transport over a stream (socket): each batch goes out as one writev (cork/uncork); the
 * stream's own buffer and 'drain' provide the backpressure.
 */
export function streamTransport(stream: () => Writable | undefined, notConnected: () => Error): Transport {
  return {
    write(chunks) {
      const target = stream();
      if (!target || target.destroyed) throw notConnected();
      target.cork();
      let more = true;
      for (const chunk of chunks) more = target.write(chunk);
      target.uncork();
      return more;
    },
    drained() {
      const target = stream();
      if (!target || target.destroyed) return Promise.reject(notConnected());
      if (!target.writableNeedDrain) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          target.off('close', onClose);
          resolve();
        };
        const onClose = () => {
          target.off('drain', onDrain);
          reject(notConnected());
        };
        target.once('drain', onDrain);
        target.once('close', onClose);
      });
    },
  };
}
