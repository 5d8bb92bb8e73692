import type { Transform } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

/**
 * Content codings of upstream answers the gateway has to read: a body scrubbed of the values it
 * injected, an OAuth answer it rewrites. It asks upstream for `identity`; an upstream that encodes
 * anyway is decoded when the coding is one node's zlib reads (gzip, deflate, br), and refused
 * otherwise, so no body it cannot read passes to the box unscrubbed.
 */

export type ContentCoding = 'gzip' | 'deflate' | 'br';

export type CodingVerdict =
  | { readonly kind: 'identity' }
  | { readonly kind: 'decode'; readonly coding: ContentCoding }
  | { readonly kind: 'refuse'; readonly reason: string };

const READABLE = new Map<string, ContentCoding>([
  ['gzip', 'gzip'],
  ['x-gzip', 'gzip'],
  ['deflate', 'deflate'],
  ['br', 'br'],
]);

/** What to do with a body sent with this Content-Encoding header. Pure. */
export function contentCodingOf(header: string | readonly string[] | undefined): CodingVerdict {
  const raw = typeof header === 'string' ? header : (header ?? []).join(',');
  const codings = raw
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity');
  if (codings.length === 0) return { kind: 'identity' };
  if (codings.length > 1) return { kind: 'refuse', reason: 'the body has more than one content coding' };
  const coding = READABLE.get(codings[0]!);
  if (coding !== undefined) return { kind: 'decode', coding };
  const shown = /^[a-z0-9._+-]{1,32}$/.test(codings[0]!) ? codings[0]! : '(unreadable)';
  return { kind: 'refuse', reason: `the body has content coding ${shown}, which the gateway cannot read` };
}

/** A streaming decoder (memory bounded by back-pressure: it decodes as fast as the box reads). */
export function createDecoder(coding: ContentCoding): Transform {
  switch (coding) {
    case 'gzip':
      return zlib.createGunzip();
    case 'deflate':
      return zlib.createInflate();
    case 'br':
      return zlib.createBrotliDecompress();
  }
}

/** Decodes a whole body; throws past `maxBytes` of output or on a corrupt body. */
export function decodeBody(coding: ContentCoding, body: Buffer, maxBytes: number): Buffer {
  const options = { maxOutputLength: maxBytes };
  switch (coding) {
    case 'gzip':
      return zlib.gunzipSync(body, options);
    case 'deflate':
      return zlib.inflateSync(body, options);
    case 'br':
      return zlib.brotliDecompressSync(body, options);
  }
}

const gunzip = promisify(zlib.gunzip);
const inflate = promisify(zlib.inflate);
const brotliDecompress = promisify(zlib.brotliDecompress);

/**
 * Decodes a whole body in libuv's thread pool, not on the event loop (a body of up to 32 MiB from
 * a box takes tens of ms to inflate); rejects past `maxBytes` of output or on a corrupt body.
 */
export function decodeBodyOffLoop(coding: ContentCoding, body: Buffer, maxBytes: number): Promise<Buffer> {
  const options = { maxOutputLength: maxBytes };
  switch (coding) {
    case 'gzip':
      return gunzip(body, options);
    case 'deflate':
      return inflate(body, options);
    case 'br':
      return brotliDecompress(body, options);
  }
}
