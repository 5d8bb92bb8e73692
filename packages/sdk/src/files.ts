import type { EntryInfo, FileListResponse } from '@agentbox/protocol';
import { asBuffer, utf8 } from './bytes.js';
import { sdkError } from './errors.js';
import type { HttpTransport, RequestOpts } from './http.js';

/**
 * What `files.write` takes: text (UTF-8), bytes, a `Blob` (a browser's `File`: sent as fetch reads
 * it, over any HTTP version), or a stream of bytes (uploaded as it is read; browsers stream a
 * request body only over HTTP/2, so there pass the `File` itself).
 */
export type FileData =
  string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

export interface WriteResult {
  /** The absolute path written. */
  path: string;
  bytes: number;
}

function toBody(data: FileData): Uint8Array | Blob | ReadableStream<Uint8Array> {
  if (typeof data === 'string') return utf8(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (data instanceof Blob) return data;
  if (data instanceof ReadableStream) return data;
  return ReadableStream.from(data);
}

const isJson = (res: Response) => (res.headers.get('content-type') ?? '').startsWith('application/json');

/**
 * `box.files`: paths are absolute, or relative to /workspace; `..` is refused
 * (`PathOutsideWorkspaceError`), a missing one is `FileNotFoundError`.
 */
export class Files {
  constructor(
    private readonly http: HttpTransport,
    private readonly boxId: string,
  ) {}

  private get path() {
    return `/v1/boxes/${encodeURIComponent(this.boxId)}/files`;
  }

  /** The file's bytes (a Buffer in Node, a Uint8Array in a browser). A directory is refused: list it instead. */
  async read(path: string, opts: RequestOpts = {}): Promise<Buffer> {
    const res = await this.http.request({ method: 'GET', path: this.path, query: { path }, ...opts });
    if (isJson(res)) {
      await res.body?.cancel();
      throw sdkError('invalid_request', `${path} is a directory; use files.list()`);
    }
    return asBuffer(new Uint8Array(await res.arrayBuffer()));
  }

  /** The file's bytes as a stream, as they are downloaded (for files too big to hold). */
  async readStream(path: string, opts: RequestOpts = {}): Promise<ReadableStream<Uint8Array>> {
    const res = await this.http.request({ method: 'GET', path: this.path, query: { path }, ...opts });
    if (isJson(res) || !res.body) {
      await res.body?.cancel();
      throw sdkError('invalid_request', `${path} is a directory; use files.list()`);
    }
    return res.body;
  }

  /** The file as UTF-8 text. */
  async readText(path: string, opts: RequestOpts = {}): Promise<string> {
    return new TextDecoder().decode(await this.read(path, opts));
  }

  /** Writes (or replaces, atomically) a file; parent directories are made. */
  async write(path: string, data: FileData, opts: RequestOpts = {}): Promise<WriteResult> {
    return this.http.json<WriteResult>({
      method: 'PUT',
      path: this.path,
      query: { path },
      bytes: toBody(data),
      ...opts,
    });
  }

  /** The entries of a directory. A file is refused. */
  async list(path: string, opts: RequestOpts = {}): Promise<EntryInfo[]> {
    return (await this.listing(path, opts)).entries;
  }

  /**
   * The directory's whole listing: its entries and `omitted`, how many were left out because their
   * name is not valid UTF-8 (JSON cannot carry it). A file is refused.
   */
  async listing(path: string, opts: RequestOpts = {}): Promise<FileListResponse> {
    const res = await this.http.request({ method: 'GET', path: this.path, query: { path }, ...opts });
    if (!isJson(res)) {
      await res.body?.cancel();
      throw sdkError('invalid_request', `${path} is not a directory; use files.read()`);
    }
    return (await res.json()) as FileListResponse;
  }

  /** Deletes a file or a whole directory tree. */
  async remove(path: string, opts: RequestOpts = {}): Promise<void> {
    await this.http.json({ method: 'DELETE', path: this.path, query: { path }, ...opts });
  }

  /** Whether the path exists. */
  async exists(path: string, opts: RequestOpts = {}): Promise<boolean> {
    try {
      const res = await this.http.request({ method: 'GET', path: this.path, query: { path }, ...opts });
      await res.body?.cancel();
      return true;
    } catch (err) {
      if ((err as { code?: unknown }).code === 'file_not_found') return false;
      throw err;
    }
  }
}
