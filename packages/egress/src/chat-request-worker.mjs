// Reads a Chat Completions request body off the daemon's event loop: JSON.parse of a body of up
// to 32 MiB takes 0.2-1 s, which on the main thread would stall every box and request of the host.
// It answers only what the gateway's pricing needs (see chat-request-check.ts); plain JavaScript,
// so the same file runs under node from dist and under the tests from src.
import { parentPort } from 'node:worker_threads';

parentPort.on('message', ({ id, bytes }) => {
  let request;
  try {
    request = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    parentPort.postMessage({ id, shape: 'not_json' });
    return;
  }
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    parentPort.postMessage({ id, shape: 'not_object' });
    return;
  }
  const options = request.stream_options;
  parentPort.postMessage({
    id,
    shape: 'object',
    stream: request.stream === true,
    includeUsage: options !== null && typeof options === 'object' && options.include_usage === true,
  });
});
