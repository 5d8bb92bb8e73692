import type { LibraryItem, LibraryItemSummary, LibraryKind } from '@agentbox/protocol';
import type { HttpTransport, RequestOpts } from './http.js';

/** Names one library item; `namespace` defaults to `_global`. */
export interface LibraryRefInput {
  kind: LibraryKind;
  name: string;
  namespace?: string;
}

export interface LibraryListOpts extends RequestOpts {
  kind?: LibraryKind;
  namespace?: string;
}

const itemPath = (ref: LibraryRefInput) =>
  `/v1/library/${encodeURIComponent(ref.kind)}/${encodeURIComponent(ref.namespace ?? '_global')}/${encodeURIComponent(ref.name)}`;

/** `client.library`: skills, agent definitions, MCP servers, hooks, rules and settings (put/remove need an admin key). */
export class Library {
  constructor(private readonly http: HttpTransport) {}

  /** Creates or replaces an item from its files (relative name → UTF-8 content). */
  put(
    ref: LibraryRefInput,
    files: Record<string, string>,
    opts: RequestOpts = {},
  ): Promise<LibraryItemSummary> {
    return this.http.json<LibraryItemSummary>({
      method: 'PUT',
      path: itemPath(ref),
      json: { files },
      ...opts,
    });
  }

  /** One item with its files. */
  get(ref: LibraryRefInput, opts: RequestOpts = {}): Promise<LibraryItem> {
    return this.http.json<LibraryItem>({ method: 'GET', path: itemPath(ref), ...opts });
  }

  async list(opts: LibraryListOpts = {}): Promise<LibraryItemSummary[]> {
    const { kind, namespace, ...rest } = opts;
    const body = await this.http.json<{ items: LibraryItemSummary[] }>({
      method: 'GET',
      path: '/v1/library',
      query: { kind, namespace },
      ...rest,
    });
    return body.items;
  }

  async remove(ref: LibraryRefInput, opts: RequestOpts = {}): Promise<void> {
    await this.http.json({ method: 'DELETE', path: itemPath(ref), ...opts });
  }
}
