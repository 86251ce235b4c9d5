/**
 * A model in a browser tab, as a ModelSource (src/util/files.ts): files the user picked
 * (`BlobSource`: read by range requests of each file's object URL), or a folder or GGUF file at a
 * URL (`UrlSource`: read by HTTP range requests, or from the tab's cache, src/web/cache.ts). Either way a file is read
 * where the loader asks, a bounded piece at a time: the tab never holds a model's file in
 * JavaScript memory, only the loader's staging buffer and one piece in flight.
 */
import type { ModelFile, ModelSource } from '../util/files.ts';

/** A download on its way into the tab's cache (cache.ts CacheWriter). */
export interface CacheWriter {
  readonly url: string;
  readonly size: number;
  readonly done: boolean;
  write(position: number, bytes: Uint8Array): Promise<void>;
  /** The byte ranges not written yet. */
  missing(): [number, number][];
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** What a UrlSource asks of the tab's cache (cache.ts WeightCache). */
export interface SourceCache {
  /** The cached file for this URL, size and ETag, or null. */
  lookup(url: string, bytes: number, etag: string): Promise<Blob | null>;
  /** Any cached version of `url`, or null. */
  find(url: string): Promise<{ bytes: number; etag: string } | null>;
  writer(url: string, bytes: number, etag: string): Promise<CacheWriter>;
}

/** The most one read takes from a Blob or one range request fetches: what a read holds in memory. */
export const READ_PIECE_BYTES = 8 * 2 ** 20;
/**
 * The least one range request fetches: a small read (a header's length field) takes this much,
 * so the reads that follow it (the header) are answered from memory. Larger reads fetch what
 * they ask for and no more: a window past a tensor's end would be fetched again when the loader
 * comes back for the tensor stored there, as it reads in the model's order, not the file's.
 */
const MIN_FETCH_BYTES = 64 * 1024;

/** Whether this runs in a page (the engine in a tab), not in Node (the tests of these sources). */
const IN_A_PAGE = typeof (globalThis as { document?: unknown }).document !== 'undefined';

/** The files a loader may look for in a folder at a URL that does not list itself (missing ones are fine). */
const FOLDER_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'model.safetensors.index.json', 'model.safetensors'];

/** Bytes a load read, by where they came from: what the page shows, and what the tests count. */
export class ReadMeter {
  network = 0;
  cache = 0;
  picked = 0;
}

function notFound(path: string): Error {
  return Object.assign(new Error(`no such file: ${path}`), { code: 'ENOENT' });
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new DOMException('the load was cancelled', 'AbortError');
}

/**
 * Reads the `length` bytes `stream` holds into `buf` (at least that large), returning the bytes
 * and the buffer to pass next time. A byte stream (a fetch body, in Chromium) is read with a
 * BYOB reader into that one buffer, so a load allocates nothing per read: otherwise every
 * piece read would be garbage waiting for a collection, and a tab's memory would be a multiple
 * of a piece rather than one. Another stream is read whole, as the browser gives it.
 *
 * The reads stop at `length` bytes without waiting for the stream's end, and the stream is let
 * go rather than cancelled: with Blob slices' streams, both waiting for the end and cancelling
 * sometimes never completed in Chromium (blobFile reads fetch bodies for that reason).
 */
async function readStreamInto(stream: ReadableStream<Uint8Array>, buf: ArrayBuffer, length: number): Promise<{ bytes: Uint8Array; buf: ArrayBuffer }> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = stream.getReader({ mode: 'byob' });
  } catch {
    const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
    return { bytes, buf };
  }
  let filled = 0;
  while (filled < length) {
    const { value, done } = await reader.read(new Uint8Array(buf, filled, length - filled));
    // The view given was transferred: the bytes are in value's buffer, which is ours again.
    if (value) buf = value.buffer as ArrayBuffer;
    if (done) break;
    filled += value!.byteLength;
  }
  // What follows the bytes (nothing, or the end) is not waited for, nor the stream cancelled: it is let go.
  reader.releaseLock();
  return { bytes: new Uint8Array(buf, 0, filled), buf };
}

/**
 * A ModelFile over a Blob (a picked File, a file in the cache). Each read is a range request of
 * the Blob's own object URL, read into one buffer (readStreamInto): a fetch body is a byte stream
 * whose reads Chromium completes reliably, where reads of Blob.slice().stream() sometimes never
 * end, and Blob.slice().arrayBuffer() allocates a buffer per read that the tab's memory holds
 * until a collection (150 MiB and more of garbage while loading a model, measured). Outside a
 * browser (Node, the tests) a read is a slice: Node's fetch of a blob: URL answers a range one
 * byte short.
 */
export function blobFile(blob: Blob, count: (bytes: number) => void, signal?: AbortSignal): ModelFile {
  let url: string | null = null;
  let piece: ArrayBuffer | undefined;
  return {
    size: blob.size,
    kind: 'file',
    async read(into, offset, length, position) {
      throwIfAborted(signal);
      const end = Math.min(blob.size, position + Math.min(length, READ_PIECE_BYTES));
      if (end <= position) return 0;
      if (!IN_A_PAGE) {
        const bytes = new Uint8Array(await blob.slice(position, end).arrayBuffer());
        into.set(bytes, offset);
        count(bytes.byteLength);
        return bytes.byteLength;
      }
      url ??= URL.createObjectURL(blob);
      const got = await fetchRange(url, { start: position, end, size: blob.size }, { headers: {}, signal, buf: piece ?? new ArrayBuffer(READ_PIECE_BYTES) });
      piece = got.buf;
      into.set(got.bytes, offset);
      count(got.bytes.byteLength);
      return got.bytes.byteLength;
    },
    close: async () => {
      if (url !== null) URL.revokeObjectURL(url);
      url = null;
      piece = undefined;
    },
  };
}

/**
 * Files under the folder `dir` (an absolute POSIX path of its own, e.g. /picked), each a Blob:
 * the files a user picked (a File is a Blob), or bytes a test holds.
 */
export class BlobSource implements ModelSource {
  private readonly files = new Map<string, Blob>();

  constructor(
    readonly dir: string,
    private readonly meter = new ReadMeter(),
    private readonly signal?: AbortSignal,
  ) {}

  add(name: string, data: Blob | Uint8Array): void {
    this.files.set(`${this.dir}/${name}`, data instanceof Uint8Array ? new Blob([data as Uint8Array<ArrayBuffer>]) : data);
  }

  get names(): string[] {
    return [...this.files.keys()].map((p) => p.slice(this.dir.length + 1));
  }

  get totalBytes(): number {
    let n = 0;
    for (const b of this.files.values()) n += b.size;
    return n;
  }

  private isFolder(path: string): boolean {
    const prefix = path.endsWith('/') ? path : `${path}/`;
    return [...this.files.keys()].some((p) => p.startsWith(prefix));
  }

  async exists(path: string): Promise<boolean> {
    return this.files.has(path) || this.isFolder(path);
  }

  async list(path: string): Promise<string[]> {
    const prefix = path.endsWith('/') ? path : `${path}/`;
    const names = new Set<string>();
    for (const p of this.files.keys()) if (p.startsWith(prefix)) names.add(p.slice(prefix.length).split('/')[0]!);
    return [...names];
  }

  async readText(path: string): Promise<string> {
    const blob = this.files.get(path);
    if (!blob) throw notFound(path);
    return blob.text();
  }

  async open(path: string): Promise<ModelFile> {
    const blob = this.files.get(path);
    if (!blob) {
      if (this.isFolder(path)) return { size: 0, kind: 'directory', read: async () => 0, close: async () => {} };
      throw notFound(path);
    }
    return blobFile(blob, (n) => (this.meter.picked += n), this.signal);
  }
}

/**
 * The files the user picked (a folder through webkitdirectory, or one GGUF file), under `dir`.
 * A picked folder's files carry their path inside it (`webkitRelativePath`, "folder/name"): the
 * folder's own name is dropped, so the files sit at `dir/name` as the loaders expect. Nothing is
 * read here: the loaders read each file where they need it.
 */
export function pickedFiles(files: Iterable<File>, dir: string, meter?: ReadMeter, signal?: AbortSignal): BlobSource {
  const source = new BlobSource(dir, meter, signal);
  for (const file of files) source.add(file.webkitRelativePath ? file.webkitRelativePath.split('/').slice(1).join('/') : file.name, file);
  return source;
}

/** What a HEAD request says of a file. */
interface Head {
  url: string;
  size: number;
  /** The server's ETag, else its Last-Modified (one of them keys the cache), else ''. */
  etag: string;
}

/**
 * A folder (or one GGUF file) at a URL, under the path `dir`: `dir/name` is `base + name`. Each
 * file is asked for with HEAD (its size and ETag), then read from the tab's cache when it holds
 * that URL, size and ETag, else by range requests of READ_PIECE_BYTES, each piece also written to
 * the cache; `finish()` completes and commits those writes once the load is done. Without the
 * network, a file the cache holds under its URL is read from there whatever its ETag was.
 */
export class UrlSource implements ModelSource {
  private readonly heads = new Map<string, Promise<Head | null>>();
  /** The folder's listing, once list() has it (exists() then asks no server). */
  private listing: Set<string> | null = null;
  private readonly writers: CacheWriter[] = [];
  /** Why a file could not be cached (the quota), once: the load goes on without caching it. */
  cacheProblem: string | null = null;

  constructor(
    readonly dir: string,
    private readonly base: URL,
    private readonly opts: { cache: SourceCache | null; meter: ReadMeter; signal?: AbortSignal; headers?: Record<string, string> },
  ) {
    // Headers (an API key) go only to the page's own origin, never to another site's URL.
    const page = (globalThis as { location?: { origin: string } }).location;
    this.headers = page && base.origin !== page.origin ? {} : { ...opts.headers };
  }

  /** What every request of this source sends. */
  readonly headers: Record<string, string>;

  private urlOf(path: string): string {
    if (path !== this.dir && !path.startsWith(`${this.dir}/`)) throw notFound(path);
    return new URL(path.slice(this.dir.length + 1), this.base).href;
  }

  /** HEAD of `path`, once per load: null for a 404; throws for another failure. */
  private head(path: string): Promise<Head | null> {
    let head = this.heads.get(path);
    if (!head) {
      const url = this.urlOf(path);
      head = this.fetchHead(url);
      this.heads.set(path, head);
    }
    return head;
  }

  private async fetchHead(url: string): Promise<Head | null> {
    let res: Response;
    try {
      res = await fetch(url, { method: 'HEAD', headers: this.headers, signal: this.opts.signal, cache: 'no-store' });
    } catch (err) {
      throwIfAborted(this.opts.signal);
      // Offline: what the cache holds under this URL stands in for the server's answer.
      const held = await this.opts.cache?.find(url);
      if (held) return { url, size: held.bytes, etag: held.etag };
      throw new Error(`${url}: cannot be reached (${(err as Error).message}), and the tab's cache does not hold it`);
    }
    if (res.status === 404) return null;
    if (res.status === 401) throw new Error(`${url}: 401: the server wants its API key for its model's files (type it into the key field)`);
    if (!res.ok) throw new Error(`${url}: ${res.status} ${res.statusText}`);
    const size = Number(res.headers.get('Content-Length'));
    if (!Number.isSafeInteger(size)) throw new Error(`${url}: the server gave no Content-Length, so the file cannot be read by ranges`);
    return { url, size, etag: res.headers.get('ETag') ?? res.headers.get('Last-Modified') ?? '' };
  }

  async exists(path: string): Promise<boolean> {
    if (path === this.dir) return true;
    if (this.listing) return this.listing.has(path.slice(this.dir.length + 1));
    return (await this.head(path)) !== null;
  }

  /**
   * The folder's files: its listing when the server gives one (`openchat serve` answers a GET of
   * the folder with {"files": [...]}), else the usual files of a Hugging Face folder that exist.
   */
  async list(path: string): Promise<string[]> {
    if (path !== this.dir) return [];
    try {
      const res = await fetch(this.base, { headers: { ...this.headers, Accept: 'application/json' }, signal: this.opts.signal, cache: 'no-store' });
      if (res.ok && (res.headers.get('Content-Type') ?? '').startsWith('application/json')) {
        const listing = (await res.json()) as { files?: unknown };
        if (Array.isArray(listing.files)) {
          const names = listing.files.filter((f): f is string => typeof f === 'string');
          this.listing = new Set(names);
          return names;
        }
      }
    } catch {
      throwIfAborted(this.opts.signal);
      // No listing (offline, or a plain file server): the usual names below.
    }
    const present: string[] = [];
    for (const name of FOLDER_FILES) if (await this.exists(`${this.dir}/${name}`)) present.push(name);
    return present;
  }

  async readText(path: string): Promise<string> {
    const file = await this.open(path);
    try {
      const bytes = new Uint8Array(file.size);
      for (let at = 0; at < file.size; ) {
        const n = await file.read(bytes, at, file.size - at, at);
        if (n <= 0) throw new Error(`${this.urlOf(path)}: ended at byte ${at} of ${file.size}`);
        at += n;
      }
      return new TextDecoder().decode(bytes);
    } finally {
      await file.close();
    }
  }

  async open(path: string): Promise<ModelFile> {
    throwIfAborted(this.opts.signal);
    const head = await this.head(path);
    if (head === null) throw notFound(path);
    const { cache, meter, signal } = this.opts;
    const held = await cache?.lookup(head.url, head.size, head.etag);
    if (held) return blobFile(held, (n) => (meter.cache += n), signal);
    let writer: CacheWriter | null = null;
    if (cache && this.cacheProblem === null) {
      try {
        writer = await cache.writer(head.url, head.size, head.etag);
        this.writers.push(writer);
      } catch (err) {
        this.cacheProblem = (err as Error).message;
      }
    }
    return new RangeFile(head, writer, this, meter, signal);
  }

  /** A cache write failed (the quota): the file is not cached, and the load goes on. */
  dropWriter(writer: CacheWriter, err: unknown): void {
    this.cacheProblem ??= (err as Error).message;
    void writer.abort();
  }

  /** Once the model is loaded: fetches what the loader skipped of each file, and commits the files to the cache. */
  async finish(): Promise<void> {
    let buf = new ArrayBuffer(READ_PIECE_BYTES);
    for (const w of this.writers) {
      if (w.done) continue;
      try {
        for (const [start, end] of w.missing()) {
          for (let at = start; at < end; at += READ_PIECE_BYTES) {
            const got = await fetchRange(w.url, { start: at, end: Math.min(end, at + READ_PIECE_BYTES), size: w.size }, { headers: this.headers, signal: this.opts.signal, buf });
            buf = got.buf;
            this.opts.meter.network += got.bytes.byteLength;
            await w.write(at, got.bytes);
          }
        }
        await w.commit();
      } catch (err) {
        throwIfAborted(this.opts.signal);
        this.dropWriter(w, err);
      }
    }
  }

  /** The load failed or was cancelled: nothing half-written stays in the cache. */
  async abandon(): Promise<void> {
    await Promise.all(this.writers.map((w) => w.abort()));
  }
}

/**
 * Bytes start .. end of the file at `url` (of `size` bytes), by one range request, into `buf`
 * (readStreamInto; a new buffer when none is given or it is too small).
 */
async function fetchRange(
  url: string,
  range: { start: number; end: number; size: number },
  opts: { headers: Record<string, string>; signal?: AbortSignal; buf?: ArrayBuffer },
): Promise<{ bytes: Uint8Array; buf: ArrayBuffer }> {
  const { start, end, size } = range;
  const res = await fetch(url, { headers: { ...opts.headers, Range: `bytes=${start}-${end - 1}` }, signal: opts.signal, cache: 'no-store' });
  const whole = res.status === 200 && start === 0 && end === size;
  if ((res.status !== 206 && !whole) || !res.body) {
    throw new Error(`${url}: asked for bytes ${start}-${end - 1}, the server answered ${res.status} ${res.statusText}${res.status === 200 ? ' with the whole file (it does not serve ranges)' : ''}`);
  }
  const buf = opts.buf && opts.buf.byteLength >= end - start ? opts.buf : new ArrayBuffer(end - start);
  const got = await readStreamInto(res.body, buf, end - start);
  if (got.bytes.byteLength !== end - start) throw new Error(`${url}: asked for ${end - start} bytes at ${start}, got ${got.bytes.byteLength} (the file changed on the server?)`);
  return got;
}

/** A file at a URL, read by range requests through one window (the last one fetched), each window also written to the cache. */
class RangeFile implements ModelFile {
  readonly kind = 'file';
  readonly size: number;
  private window: Uint8Array | null = null;
  private windowStart = 0;
  /** The buffer every window is fetched into. */
  private buf: ArrayBuffer | undefined;

  constructor(
    private readonly head: Head,
    private writer: CacheWriter | null,
    private readonly source: UrlSource,
    private readonly meter: ReadMeter,
    private readonly signal?: AbortSignal,
  ) {
    this.size = head.size;
  }

  async read(into: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    throwIfAborted(this.signal);
    if (position >= this.size || length <= 0) return 0;
    const w = this.window;
    if (!w || position < this.windowStart || position >= this.windowStart + w.byteLength) {
      const end = Math.min(this.size, position + Math.max(MIN_FETCH_BYTES, Math.min(length, READ_PIECE_BYTES)));
      this.window = null;
      const got = await fetchRange(this.head.url, { start: position, end, size: this.size }, { headers: this.source.headers, signal: this.signal, buf: this.buf ?? new ArrayBuffer(READ_PIECE_BYTES) });
      this.buf = got.buf;
      const bytes = got.bytes;
      this.meter.network += bytes.byteLength;
      this.window = bytes;
      this.windowStart = position;
      if (this.writer) {
        try {
          await this.writer.write(position, bytes);
        } catch (err) {
          this.source.dropWriter(this.writer, err);
          this.writer = null;
        }
      }
    }
    const at = position - this.windowStart;
    const n = Math.min(length, this.window!.byteLength - at);
    into.set(this.window!.subarray(at, at + n), offset);
    return n;
  }

  async close(): Promise<void> {
    this.window = null;
    this.buf = undefined;
  }
}
