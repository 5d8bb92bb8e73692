export {
  FRAME_MAGIC,
  FRAME_HEADER_BYTES,
  MAX_FRAME_PAYLOAD_BYTES,
  DATA_CHUNK_BYTES,
  FrameKind,
  FrameDecoder,
  FrameError,
  encodeFrame,
  frameHeader,
  type Frame,
} from './frame.js';
export { streamTransport } from './socket-write.js';
export {
  Mux,
  ChannelOverflowError,
  DEFAULT_WINDOW_BYTES,
  type Transport,
  type FdSource,
  type ChannelHandler,
  type DataStream,
  type MuxOptions,
} from './mux.js';
