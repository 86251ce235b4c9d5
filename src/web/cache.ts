/**
 * The tab's weight cache: files downloaded from a URL, kept in the origin private file system
 * (OPFS, navigator.storage.getDirectory()), so the next visit loads from disk instead of the
 * network. One OPFS file per downloaded file, and an index (index.json) naming each by its URL,
 * size and ETag: a file changed on the server (another ETag or size) is downloaded again.
 *
 * Why OPFS rather than Cache Storage: a load reads a file by ranges, in the order the loader
 * wants them, and OPFS takes each range where it belongs (a positional write) and gives the file
 * back as a File, read by slices exactly like a picked file. Cache Storage stores whole
 * responses, so a ranged download would have to be assembled in memory (or re-downloaded whole)
 * before it could be stored. bench/RESULTS.md ("The engine in a tab") has the figures.
 *
 * A write goes to the browser's swap file until `commit()`; a load that fails or is cancelled
 * aborts it, so the cache holds only whole files.
 */
import type { CacheWriter as SourceCacheWriter, SourceCache } from './sources.ts';
import type { CachedFile } from './tab_api.ts';

const DIR = 'openchat-weights';
const INDEX = 'index.json';

interface IndexEntry extends CachedFile {
  /** The OPFS file holding it. */
  file: string;
}

/** A key's file name: 64 bits of FNV-1a over the key, in hex (OPFS names are plain, and keys hold URLs). */
function fileName(key: string): string {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ key.length;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x01000193 + 2 * i + 1) >>> 0;
  }
  return `w-${a.toString(16).padStart(8, '0')}${b.toString(16).padStart(8, '0')}`;
}

export function cacheKey(url: string, bytes: number, etag: string): string {
  return `${url} ${bytes} ${etag}`;
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;

/** A quota failure, in one line: what is full and what to do. */
function quotaMessage(bytes: number, usage: number, quota: number): string {
  return `the browser's storage for this page is full (${mib(usage)} used of ${mib(quota)}, a ${mib(bytes)} file does not fit): ` +
    'the model loads, but is not cached; delete cached models or free disk space';
}

export class WeightCache implements SourceCache {
  private constructor(private readonly dir: FileSystemDirectoryHandle) {}

  /** The cache, or the reason there is none (no OPFS: an insecure page, or a browser without it). */
  static async open(): Promise<WeightCache | string> {
    if (!window.isSecureContext) return 'the page is not a secure context (https, or http on localhost), so it has no private storage: weights are not cached';
    if (!navigator.storage?.getDirectory) return 'this browser has no origin private file system: weights are not cached';
    try {
      const root = await navigator.storage.getDirectory();
      return new WeightCache(await root.getDirectoryHandle(DIR, { create: true }));
    } catch (err) {
      return `the page's private storage cannot be opened (${(err as Error).message}): weights are not cached`;
    }
  }

  private async index(): Promise<IndexEntry[]> {
    try {
      const text = await (await (await this.dir.getFileHandle(INDEX)).getFile()).text();
      const entries = JSON.parse(text) as unknown;
      return Array.isArray(entries) ? (entries as IndexEntry[]) : [];
    } catch {
      return []; // no index yet, or a damaged one: nothing is cached
    }
  }

  private async saveIndex(entries: IndexEntry[]): Promise<void> {
    const w = await (await this.dir.getFileHandle(INDEX, { create: true })).createWritable();
    await w.write(JSON.stringify(entries));
    await w.close();
  }

  async list(): Promise<CachedFile[]> {
    return (await this.index()).map(({ key, url, bytes, etag, storedAt }) => ({ key, url, bytes, etag, storedAt }));
  }

  /** The cached file for this URL, size and ETag, or null. */
  async lookup(url: string, bytes: number, etag: string): Promise<File | null> {
    const key = cacheKey(url, bytes, etag);
    const entry = (await this.index()).find((e) => e.key === key);
    return entry ? this.fileOf(entry) : null;
  }

  /** Any cached version of `url` (for a load without the network), or null. */
  async find(url: string): Promise<CachedFile | null> {
    const entries = (await this.index()).filter((e) => e.url === url).sort((x, y) => y.storedAt - x.storedAt);
    for (const e of entries) if (await this.fileOf(e)) return e;
    return null;
  }

  private async fileOf(entry: IndexEntry): Promise<File | null> {
    try {
      const file = await (await this.dir.getFileHandle(entry.file)).getFile();
      return file.size === entry.bytes ? file : null;
    } catch {
      return null; // listed but gone (the user cleared site data): not cached
    }
  }

  /** Starts caching a download; rejects with one line when the quota cannot hold it. */
  async writer(url: string, bytes: number, etag: string): Promise<CacheWriter> {
    const { usage = 0, quota = Infinity } = await navigator.storage.estimate();
    if (usage + bytes > quota) throw new Error(quotaMessage(bytes, usage, quota));
    const key = cacheKey(url, bytes, etag);
    const name = fileName(key);
    const stream = await (await this.dir.getFileHandle(name, { create: true })).createWritable({ keepExistingData: false });
    return new CacheWriter(url, bytes, stream, async () => {
      const entries = (await this.index()).filter((e) => e.url !== url && e.file !== name);
      // Older versions of the URL are replaced: their files go.
      for (const old of (await this.index()).filter((e) => e.url === url && e.file !== name)) await this.removeFile(old.file);
      entries.push({ key, url, bytes, etag, storedAt: Date.now(), file: name });
      await this.saveIndex(entries);
    }, async () => this.removeFile(name), quotaMessage);
  }

  private async removeFile(name: string): Promise<void> {
    try {
      await this.dir.removeEntry(name);
    } catch {
      // already gone
    }
  }

  /** Deletes one cached file, or all of them. */
  async delete(key?: string): Promise<void> {
    const entries = await this.index();
    const gone = key === undefined ? entries : entries.filter((e) => e.key === key);
    for (const e of gone) await this.removeFile(e.file);
    await this.saveIndex(entries.filter((e) => !gone.includes(e)));
  }
}

/** One download on its way into the cache: pieces written where they belong, committed once whole. */
export class CacheWriter implements SourceCacheWriter {
  /** Written byte ranges [start, end), sorted and merged. */
  private covered: [number, number][] = [];
  done = false;

  constructor(
    readonly url: string,
    readonly size: number,
    private readonly stream: FileSystemWritableFileStream,
    private readonly onCommit: () => Promise<void>,
    private readonly onAbort: () => Promise<void>,
    private readonly quota: (bytes: number, usage: number, quota: number) => string,
  ) {}

  async write(position: number, bytes: Uint8Array): Promise<void> {
    if (this.done) return;
    try {
      await this.stream.write({ type: 'write', position, data: bytes as Uint8Array<ArrayBuffer> });
    } catch (err) {
      if ((err as DOMException).name === 'QuotaExceededError') {
        const { usage = 0, quota = 0 } = await navigator.storage.estimate();
        throw new Error(this.quota(this.size, usage, quota));
      }
      throw err;
    }
    this.cover(position, position + bytes.byteLength);
  }

  private cover(start: number, end: number): void {
    const all = [...this.covered, [start, end] as [number, number]].sort((a, b) => a[0] - b[0]);
    const merged: [number, number][] = [];
    for (const r of all) {
      const last = merged[merged.length - 1];
      if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
      else merged.push([r[0], r[1]]);
    }
    this.covered = merged;
  }

  /** The byte ranges not written yet. */
  missing(): [number, number][] {
    const gaps: [number, number][] = [];
    let at = 0;
    for (const [s, e] of this.covered) {
      if (s > at) gaps.push([at, s]);
      at = Math.max(at, e);
    }
    if (at < this.size) gaps.push([at, this.size]);
    return gaps;
  }

  async commit(): Promise<void> {
    if (this.done) return;
    if (this.missing().length > 0) throw new Error(`${this.url}: not all of it was written`);
    this.done = true;
    await this.stream.close();
    await this.onCommit();
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.stream.abort().catch(() => {});
    await this.onAbort();
  }
}
