/**
 * The tab's URL source (sources.ts UrlSource) in Node, against `openchat serve`'s model routes:
 * a checkpoint read by range requests is the checkpoint on disk, byte for byte; every byte read
 * goes into the cache, the bytes the loader skipped are fetched by finish(), and a second load is
 * read from the cache with no request for the weights; a load that fails leaves nothing cached;
 * the server's key goes with every request; a GGUF file the server runs reads as from disk; a
 * server that ignores ranges is refused by name.
 * The cache here is a map of Blobs (the tab's, in OPFS, is tested in Chromium: engine.browser.test.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_MODEL_DIR, Generator } from '../generator.ts';
import { loadConfig } from '../model/config.ts';
import { ggufFromFolder } from '../model/gguf.testing.ts';
import { Checkpoint } from '../model/safetensors.ts';
import { GgufFile } from '../util/gguf.ts';
import { startServer, type RunningServer } from '../server/server.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';
import { ReadMeter, UrlSource, type CacheWriter, type SourceCache } from './sources.ts';

const seed = freshSeed();
const tag = `(test seed ${seed})`;
const KEY = 'sk-sources';

/** A cache of Blobs in memory, keyed as the tab's (URL, size, ETag), whose writers keep every piece written. */
class MemoryCache implements SourceCache {
  readonly files = new Map<string, Blob>();
  readonly written: { url: string; committed: boolean; aborted: boolean }[] = [];

  async lookup(url: string, bytes: number, etag: string): Promise<Blob | null> {
    return this.files.get(`${url} ${bytes} ${etag}`) ?? null;
  }

  async find(url: string): Promise<{ bytes: number; etag: string } | null> {
    for (const [key, blob] of this.files) if (key.startsWith(`${url} `)) return { bytes: blob.size, etag: key.split(' ').slice(2).join(' ') };
    return null;
  }

  async writer(url: string, bytes: number, etag: string): Promise<CacheWriter> {
    const data = new Uint8Array(bytes);
    const covered = new Uint8Array(bytes);
    const record = { url, committed: false, aborted: false };
    this.written.push(record);
    const files = this.files;
    const missing = (): [number, number][] => {
      const gaps: [number, number][] = [];
      for (let i = 0; i < bytes; ) {
        if (covered[i]) {
          i++;
          continue;
        }
        let j = i;
        while (j < bytes && !covered[j]) j++;
        gaps.push([i, j]);
        i = j;
      }
      return gaps;
    };
    return {
      url,
      size: bytes,
      get done() {
        return record.committed || record.aborted;
      },
      async write(position, piece) {
        data.set(piece, position);
        covered.fill(1, position, position + piece.byteLength);
      },
      missing,
      async commit() {
        if (missing().length > 0) throw new Error(`${url}: not all of it was written`);
        record.committed = true;
        files.set(`${url} ${bytes} ${etag}`, new Blob([data]));
      },
      async abort() {
        record.aborted = true;
      },
    };
  }
}

describe('UrlSource: a model folder by range requests, through a cache', () => {
  let gen: Generator;
  let srv: RunningServer;

  beforeAll(async () => {
    gen = await Generator.load();
    srv = await startServer({ generator: gen, port: 0, apiKeys: [KEY], logRequests: false });
  });

  afterAll(async () => {
    await srv?.close();
    gen?.close();
  });

  const source = (cache: SourceCache | null, meter = new ReadMeter()) =>
    new UrlSource('/remote', new URL(`${srv.url}/engine/served/`), { cache, meter, headers: { Authorization: `Bearer ${KEY}` } });

  it('reads the checkpoint the disk holds, caches every byte of it, and reads it from the cache next time', async () => {
    const cache = new MemoryCache();
    const meter = new ReadMeter();
    const remote = source(cache, meter);
    expect(await remote.list('/remote')).toContain('model.safetensors');
    expect(await loadConfig('/remote', remote)).toEqual(await loadConfig(BUNDLED_MODEL_DIR));
    const disk = await Checkpoint.open(BUNDLED_MODEL_DIR);
    const viaUrl = await Checkpoint.open('/remote', remote);
    try {
      expect([...viaUrl.tensors.keys()]).toEqual([...disk.tensors.keys()]);
      const rng = new Rng(seed);
      // A few tensors only, in random ranges: what finish() must fetch is what was not read.
      for (const name of [...disk.tensors.keys()].filter(() => rng.next() < 0.5)) {
        const e = disk.get(name);
        const from = rng.int(0, e.byteLength);
        const length = rng.int(0, e.byteLength - from + 1);
        expect(Buffer.from(await viaUrl.read(name, undefined, from, length)).equals(Buffer.from(await disk.read(name, undefined, from, length))), `${tag} ${name}`).toBe(true);
      }
    } finally {
      disk.close();
      viaUrl.close();
    }
    await remote.finish();
    const weights = readFileSync(join(BUNDLED_MODEL_DIR, 'model.safetensors'));
    const url = `${srv.url}/engine/served/model.safetensors`;
    const cached = [...cache.files].find(([key]) => key.startsWith(`${url} `));
    expect(cached, 'model.safetensors is cached').toBeDefined();
    expect(Buffer.from(await cached![1].arrayBuffer()).equals(weights), 'the cached copy is the file').toBe(true);
    expect(cache.written.every((w) => w.committed)).toBe(true);
    expect(meter.network).toBeGreaterThanOrEqual(weights.byteLength);

    // The next load: every file from the cache, nothing over the network but HEAD requests.
    const again = new ReadMeter();
    const second = source(cache, again);
    const ckpt = await Checkpoint.open('/remote', second);
    try {
      for (const name of ckpt.tensors.keys()) await ckpt.read(name);
    } finally {
      ckpt.close();
    }
    await second.finish();
    expect(again.network).toBe(0);
    expect(again.cache).toBeGreaterThanOrEqual(weights.byteLength - 8 * 2 ** 10);
  });

  it('a load that fails leaves nothing in the cache', async () => {
    const cache = new MemoryCache();
    const remote = source(cache);
    const ckpt = await Checkpoint.open('/remote', remote);
    await ckpt.read('model.norm.weight');
    ckpt.close();
    await remote.abandon();
    expect(cache.files.size).toBe(0);
    expect(cache.written.length).toBeGreaterThan(0);
    expect(cache.written.every((w) => w.aborted && !w.committed)).toBe(true);
  });

  it('without the key: one line saying the server wants it', async () => {
    const remote = new UrlSource('/remote', new URL(`${srv.url}/engine/served/`), { cache: null, meter: new ReadMeter() });
    await expect(loadConfig('/remote', remote)).rejects.toThrow(/401: the server wants its API key for its model's files/);
  });

  it('a cancelled load stops at its next read (AbortError)', async () => {
    const abort = new AbortController();
    const remote = new UrlSource('/remote', new URL(`${srv.url}/engine/served/`), { cache: null, meter: new ReadMeter(), signal: abort.signal, headers: { Authorization: `Bearer ${KEY}` } });
    const ckpt = await Checkpoint.open('/remote', remote);
    abort.abort();
    await expect(ckpt.read('model.norm.weight')).rejects.toThrow(/cancelled|abort/i);
    ckpt.close();
  });
});

describe('UrlSource: the GGUF file a server runs', () => {
  let dir: string;
  let file: string;
  let gen: Generator;
  let srv: RunningServer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'openchat-served-gguf-'));
    file = join(dir, 'tiny-mistral.Q8_0.gguf');
    await ggufFromFolder(BUNDLED_MODEL_DIR, file, { type: 'Q8_0' });
    gen = await Generator.load({ modelDir: file });
    srv = await startServer({ generator: gen, port: 0, logRequests: false });
  });

  afterAll(async () => {
    await srv?.close();
    gen?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is the one file the listing names, and reads by ranges as the disk does: header, metadata, tensors', async () => {
    const remote = new UrlSource('/remote', new URL(`${srv.url}/engine/served/`), { cache: null, meter: new ReadMeter() });
    expect(await remote.list('/remote')).toEqual(['tiny-mistral.Q8_0.gguf']);
    const viaUrl = await GgufFile.open('/remote/tiny-mistral.Q8_0.gguf', remote);
    const disk = await GgufFile.open(file);
    try {
      expect([...viaUrl.metadata.keys()]).toEqual([...disk.metadata.keys()]);
      expect([...viaUrl.tensors.values()]).toEqual([...disk.tensors.values()]);
      const rng = new Rng(seed);
      const names = [...disk.tensors.keys()];
      for (let k = 0; k < 5; k++) {
        const name = names[rng.int(0, names.length)]!;
        expect(Buffer.from(await viaUrl.readTensor(name)).equals(Buffer.from(await disk.readTensor(name))), `${tag} ${name}`).toBe(true);
      }
    } finally {
      viaUrl.close();
      disk.close();
    }
    expect(await loadConfig('/remote/tiny-mistral.Q8_0.gguf', remote)).toEqual(await loadConfig(file));
  });
});

describe('UrlSource against a server without ranges', () => {
  let server: Server;
  let base: string;

  beforeAll(async () => {
    const weights = readFileSync(join(BUNDLED_MODEL_DIR, 'model.safetensors'));
    // A plain file server that ignores Range: always the whole file, 200.
    server = createServer((req, res) => {
      if (!req.url?.endsWith('/model.safetensors')) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'Content-Length': String(weights.byteLength), 'Content-Type': 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : weights);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/m/`;
  });

  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('refuses it by name: the file cannot be read by ranges', async () => {
    const remote = new UrlSource('/remote', new URL(base), { cache: null, meter: new ReadMeter() });
    await expect(Checkpoint.open('/remote', remote)).rejects.toThrow(/model\.safetensors: .*the server answered 200 OK with the whole file \(it does not serve ranges\)/);
  });
});
