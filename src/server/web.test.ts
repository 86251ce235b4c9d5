/**
 * The pages' routes (web.ts) over HTTP, without a browser: what is served without a key and with
 * which headers, the bundles, the model files (whole, by range, and nothing else), and the
 * engine bundle's node:path stand-in against Node's own POSIX rules.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { posix } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_MODEL_DIR, Generator } from '../generator.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';
import * as webPath from '../web/path.ts';
import { startServer, type RunningServer } from './server.ts';

const SRC = fileURLToPath(new URL('../', import.meta.url));
const seed = freshSeed();
const tag = `(test seed ${seed})`;

describe('web routes', () => {
  let gen: Generator;
  let srv: RunningServer;

  beforeAll(async () => {
    gen = await Generator.load();
    srv = await startServer({ generator: gen, port: 0, apiKeys: ['sk-web'], logRequests: false });
  });

  afterAll(async () => {
    await srv?.close();
    gen?.close();
  });

  it('serves both pages and their assets without a key, same-origin only', async () => {
    for (const [path, type] of [['/', 'text/html'], ['/engine', 'text/html'], ['/web/page.css', 'text/css'], ['/web/chat.js', 'text/javascript'], ['/web/engine.js', 'text/javascript']] as const) {
      const res = await fetch(srv.url + path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toContain(type);
      expect(res.headers.get('content-security-policy'), path).toContain("default-src 'self'");
      expect(res.headers.get('x-frame-options'), path).toBe('DENY');
      expect(res.headers.get('access-control-allow-origin'), path).toBeNull();
      expect((await res.text()).length, path).toBeGreaterThan(100);
    }
    // The API itself still needs the key.
    expect((await fetch(`${srv.url}/v1/models`)).status).toBe(401);
  });

  it('the engine bundle carries every kernel as text and no Node built-in', async () => {
    const js = await (await fetch(`${srv.url}/web/engine.js`)).text();
    const kernels = (readdirSync(SRC, { recursive: true }) as string[]).filter((f) => f.endsWith('.wgsl'));
    expect(kernels.length).toBeGreaterThan(10);
    for (const f of kernels) expect(js, f).toContain(JSON.stringify(`file:///src/${f}`));
    // (The tokenizer worker's source, a string that is never run in a tab, mentions node:worker_threads.)
    expect(js).not.toMatch(/\bfrom\s*["']node:/);
    expect(js).not.toMatch(/__require\(["']node:/);
  });

  it('serves the bundled model\'s files, whole and by range, and nothing else', async () => {
    const weights = readFileSync(`${BUNDLED_MODEL_DIR}model.safetensors`);
    const whole = await fetch(`${srv.url}/engine/model/model.safetensors`);
    expect(whole.status).toBe(200);
    expect(Buffer.from(await whole.arrayBuffer()).equals(weights)).toBe(true);

    const rng = new Rng(seed);
    const first = rng.int(0, weights.length - 100);
    const last = first + rng.int(1, 99);
    const part = await fetch(`${srv.url}/engine/model/model.safetensors`, { headers: { Range: `bytes=${first}-${last}` } });
    expect(part.status, tag).toBe(206);
    expect(part.headers.get('content-range'), tag).toBe(`bytes ${first}-${last}/${weights.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(weights.subarray(first, last + 1)), tag).toBe(true);

    const bad = await fetch(`${srv.url}/engine/model/model.safetensors`, { headers: { Range: `bytes=${weights.length}-` } });
    expect(bad.status).toBe(416);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('range_not_satisfiable');

    const tokenizer = (await (await fetch(`${srv.url}/engine/model/tokenizer.json`)).json()) as { model: { type: string } };
    expect(tokenizer.model.type).toBe('BPE');
    for (const path of ['/engine/model/golden.json', '/engine/model/../config.json', '/engine/model/%2e%2e/golden.json', '/engine/model/%E0%A4%A', '/web/', '/web/chat.ts', '/src/web/engine.ts']) {
      const res = await fetch(srv.url + path);
      expect(res.status, path).toBeGreaterThanOrEqual(400);
      expect(res.headers.get('content-type'), path).toContain('application/json');
    }
  });

  it('lists the bundled model\'s files, and gives each an ETag (size and time) that HEAD shows too', async () => {
    const listing = await fetch(`${srv.url}/engine/model/`);
    expect(listing.status).toBe(200);
    expect(await listing.json()).toEqual({ files: ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'] });
    const size = readFileSync(`${BUNDLED_MODEL_DIR}model.safetensors`).byteLength;
    const head = await fetch(`${srv.url}/engine/model/model.safetensors`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(size));
    expect(head.headers.get('accept-ranges')).toBe('bytes');
    expect(head.headers.get('etag')).toMatch(new RegExp(`^"${size.toString(16)}-[0-9a-f]+"$`));
    const again = await fetch(`${srv.url}/engine/model/model.safetensors`, { headers: { Range: 'bytes=0-7' } });
    expect(again.headers.get('etag')).toBe(head.headers.get('etag'));
  });

  it('serves the model the server runs at /engine/served/, behind its API key, and nothing outside its folder', async () => {
    // This server has keys: the weights are not public.
    for (const path of ['/engine/served/', '/engine/served/model.safetensors']) expect((await fetch(srv.url + path)).status, path).toBe(401);
    const auth = { Authorization: 'Bearer sk-web' };
    const listing = (await (await fetch(`${srv.url}/engine/served/`, { headers: auth })).json()) as { files: string[] };
    // The folder's own files, and the built-in tokenizer's (the folder has none, and the server uses that one).
    expect(listing.files).toContain('config.json');
    expect(listing.files).toContain('model.safetensors');
    expect(listing.files).toContain('tokenizer.json');
    const rng = new Rng(seed + 1);
    const weights = readFileSync(`${BUNDLED_MODEL_DIR}model.safetensors`);
    const first = rng.int(0, weights.length - 1000);
    const part = await fetch(`${srv.url}/engine/served/model.safetensors`, { headers: { ...auth, Range: `bytes=${first}-${first + 999}` } });
    expect(part.status, tag).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(weights.subarray(first, first + 1000)), tag).toBe(true);
    for (const path of ['/engine/served/../config.json', '/engine/served/%2e%2e%2fconfig.json', '/engine/served/%2Fetc%2Fpasswd', '/engine/served/.hidden', '/engine/served/nope.bin']) {
      const res = await fetch(srv.url + path, { headers: auth });
      expect(res.status, path).toBeGreaterThanOrEqual(400);
      expect(res.headers.get('content-type'), path).toContain('application/json');
    }
  });

  it('POST to a page is not served', async () => {
    const res = await fetch(`${srv.url}/`, { method: 'POST', headers: { Authorization: 'Bearer sk-web', 'Content-Type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(404);
  });
});

describe("the engine bundle's node:path (src/web/path.ts) follows Node's POSIX rules", () => {
  it('join, resolve, relative, basename, dirname, isAbsolute on random paths', () => {
    const rng = new Rng(seed);
    const parts = ['a', 'b', '..', '.', '', 'model.safetensors', 'x y', '...'];
    const randomPath = () => (rng.next() < 0.5 ? '/' : '') + Array.from({ length: rng.int(0, 5) }, () => parts[rng.int(0, parts.length)]).join('/');
    for (let i = 0; i < 500; i++) {
      const a = randomPath();
      const b = randomPath();
      const absA = `/${a}`;
      const absB = `/${b}`;
      expect(webPath.join(a, b), `${tag} join(${a}, ${b})`).toBe(posix.join(a, b));
      expect(webPath.resolve(absA, b), `${tag} resolve(${absA}, ${b})`).toBe(posix.resolve(absA, b));
      expect(webPath.relative(absA, absB), `${tag} relative(${absA}, ${absB})`).toBe(posix.relative(absA, absB));
      expect(webPath.basename(a), `${tag} basename(${a})`).toBe(posix.basename(a));
      expect(webPath.dirname(a), `${tag} dirname(${a})`).toBe(posix.dirname(a));
      expect(webPath.isAbsolute(a)).toBe(posix.isAbsolute(a));
    }
  });
});
