/**
 * The server's web pages, read-only and without an API key (they hold no secrets; the API calls
 * they make carry the key the user types in):
 *   GET /                  the chat page (web/chat.html): talks to this server's /v1/chat/completions,
 *                          or to the engine running in the tab (/web/engine.js)
 *   GET /engine            the same page, starting with the engine in the tab
 *   GET /web/<asset>       the page's stylesheet and scripts, bundled from TypeScript by esbuild on
 *                          first request (then kept in memory)
 *   GET /engine/model/<f>  the bundled tiny model's files, for the engine in a tab (config.json,
 *                          model.safetensors, the built-in tokenizer's tokenizer.json and
 *                          tokenizer_config.json); GET /engine/model/ lists them as JSON
 *   GET /engine/served/<f> the model the server runs (its folder's files, or its GGUF file), for
 *                          the engine in a tab; behind the API key when the server has keys
 * Model files are answered whole or by one `Range: bytes=a-b`, with an ETag. Nothing else on disk
 * is reachable: a model file's name must be one its folder's listing holds.
 */
import { createReadStream, readdirSync, readFileSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Plugin } from 'esbuild';
import { BUNDLED_MODEL_DIR } from '../generator.ts';
import { isGgufPath } from '../model/gguf_model.ts';
import { loadOpenChat35Files } from '../tokenizer/openchat35.ts';
import { ApiError } from './errors.ts';

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
/** The repository's root: bundled modules are named by their path from it. */
const ROOT = here('../../');

/** A page or a bundled script: its text is made once, on first request. */
interface Asset {
  type: string;
  make: () => Promise<string> | string;
}

/** The TypeScript entry points bundled for the browser. */
const SCRIPTS: Record<string, string> = {
  '/web/chat.js': here('./web/chat.ts'),
  '/web/engine.js': here('../web/engine.ts'),
};

const ASSETS: Record<string, Asset> = {
  '/': { type: 'text/html; charset=utf-8', make: () => readFileSync(here('./web/chat.html'), 'utf8') },
  // One page for both: at /engine it starts with the engine in the tab (chat.ts reads its path).
  '/engine': { type: 'text/html; charset=utf-8', make: () => readFileSync(here('./web/chat.html'), 'utf8') },
  '/web/page.css': { type: 'text/css; charset=utf-8', make: () => readFileSync(here('./web/page.css'), 'utf8') },
  ...Object.fromEntries(
    Object.entries(SCRIPTS).map(([path, entry]) => [path, { type: 'text/javascript; charset=utf-8', make: () => bundle(entry) }]),
  ),
};

/**
 * The bundled model's files the engine may read, and where each is: the checkpoint from
 * golden/tiny-mistral (not its golden fixtures), the tokenizer from the built-in OpenChat 3.5
 * tokenizer's cache (tokenizer.ts uses it for a folder without one; a tab cannot build it).
 */
async function bundledFiles(): Promise<Map<string, string>> {
  const tokenizer = (await loadOpenChat35Files()).dir;
  return new Map([
    ['config.json', join(BUNDLED_MODEL_DIR, 'config.json')],
    ['model.safetensors', join(BUNDLED_MODEL_DIR, 'model.safetensors')],
    ['tokenizer.json', join(tokenizer, 'tokenizer.json')],
    ['tokenizer_config.json', join(tokenizer, 'tokenizer_config.json')],
  ]);
}

/**
 * The files of the model the server runs, by name: a GGUF file alone, or the regular files
 * directly inside its folder (not hidden ones, nothing in a subfolder), and the built-in
 * tokenizer's files when the folder has no tokenizer.json (the tokenizer the server itself uses
 * then). Read when asked, so the listing is what is on disk now.
 */
async function servedFiles(modelDir: string): Promise<Map<string, string>> {
  if (isGgufPath(modelDir)) return new Map([[basename(modelDir), modelDir]]);
  const files = new Map<string, string>();
  for (const name of readdirSync(modelDir)) {
    if (name.startsWith('.')) continue;
    const path = join(modelDir, name);
    // A symbolic link counts as what it points to: Hugging Face's cache is built of them.
    if (statSync(path, { throwIfNoEntry: false })?.isFile()) files.set(name, path);
  }
  if (!files.has('tokenizer.json')) {
    const tokenizer = (await loadOpenChat35Files()).dir;
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) files.set(f, join(tokenizer, f));
  }
  return files;
}

export const MODEL_ROUTE = '/engine/model/';
/** The model `openchat serve` runs, for the engine in a tab: behind the API key when the server has keys (the weights may not be public). */
export const SERVED_ROUTE = '/engine/served/';

/**
 * Same-origin only: the pages load nothing from elsewhere (blob: is the engine reading the tab's
 * own files by range, src/web/sources.ts), run no inline or eval'd script (the
 * engine's WGSL goes to WebGPU, not to script), and may not be framed by another site (a framed
 * chat page could be steered by clicks).
 */
const PAGE_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
};

const made = new Map<string, Promise<string>>();

/**
 * Bundles one entry with esbuild (what tsx already runs on), for browsers with WebGPU (ES2022).
 * `node:` modules are replaced by src/web/node-stub.ts (which throws if a Node-only path is ever
 * taken in the page) and node:path by src/web/path.ts; the kernels' WGSL comes as text (engineSources).
 */
async function bundle(entry: string): Promise<string> {
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    charset: 'utf8',
    sourcemap: 'inline',
    logLevel: 'silent',
    plugins: [engineSources()],
    alias: nodeStubs(),
    // A tab has no environment: settings read from process.env (OPENCHAT_KERNELS) take their defaults.
    define: { 'process.env.NODE_ENV': '"production"', 'process.env': '{}' },
  });
  return result.outputFiles[0]!.text;
}

/** Every Node module the model code imports (and Dawn's `webgpu`), mapped to its browser stand-in. */
function nodeStubs(): Record<string, string> {
  const stub = here('../web/node-stub.ts');
  const modules = ['fs', 'fs/promises', 'url', 'os', 'crypto', 'module', 'worker_threads'];
  return {
    ...Object.fromEntries(modules.map((m) => [`node:${m}`, stub])),
    'node:path': here('../web/path.ts'),
    webgpu: stub,
  };
}

/**
 * The kernels' WGSL in the bundle. In Node, `wgsl(file, import.meta.url)` reads the file beside
 * the module; in one bundle every module would share one import.meta.url, so each module of src/
 * gets its own as a file: URL of its path from the repository's root (file:///src/kernels/x.ts),
 * and the virtual module `openchat:wgsl` holds every .wgsl file of src/ as text under the URL
 * `wgsl()` resolves it to (file:///src/kernels/x.wgsl); engine.ts hands them to provideWgsl.
 */
function engineSources(): Plugin {
  const src = join(ROOT, 'src');
  const virtualUrl = (path: string) => `file:///${relative(ROOT, path).split('\\').join('/')}`;
  return {
    name: 'openchat-engine-sources',
    setup(build) {
      build.onResolve({ filter: /^openchat:wgsl$/ }, () => ({ path: 'wgsl', namespace: 'openchat' }));
      build.onLoad({ filter: /^wgsl$/, namespace: 'openchat' }, () => {
        const files = (readdirSync(src, { recursive: true }) as string[]).filter((f) => f.endsWith('.wgsl')).sort();
        const sources = Object.fromEntries(files.map((f) => [virtualUrl(join(src, f)), readFileSync(join(src, f), 'utf8')]));
        return { contents: `export default ${JSON.stringify(sources)};`, loader: 'js', watchFiles: files.map((f) => join(src, f)) };
      });
      build.onLoad({ filter: /\.ts$/ }, (args) => {
        if (!args.path.startsWith(src)) return undefined;
        const text = readFileSync(args.path, 'utf8');
        if (!text.includes('import.meta.url')) return undefined;
        return { contents: text.replaceAll('import.meta.url', JSON.stringify(virtualUrl(args.path))), loader: 'ts' };
      });
    },
  };
}

async function assetText(path: string, asset: Asset): Promise<string> {
  let text = made.get(path);
  if (!text) {
    text = Promise.resolve(asset.make());
    made.set(path, text);
    // A failed build is retried on the next request (the error is in the server's log).
    text.catch(() => made.delete(path));
  }
  return text;
}

/**
 * The file name `path` asks for under a model route ('' for the folder's listing), or null when
 * it is not under `route`. Paths come normalized, without a trailing slash: the folder's own URL
 * (route, with its slash) arrives as the route without it.
 */
function modelFileName(path: string, route: string): string | null {
  if (path === route.slice(0, -1)) return '';
  return path.startsWith(route) ? path.slice(route.length) : null;
}

/** Whether GET/HEAD `path` is one of the pages' routes (the model files: any name under their routes; serveWeb answers 404 for one not there). */
export function isWebPath(path: string): boolean {
  return Object.hasOwn(ASSETS, path) || modelFileName(path, MODEL_ROUTE) !== null || modelFileName(path, SERVED_ROUTE) !== null;
}

/** Whether `path` is the served model's (it needs the API key when the server has keys). */
export function isServedModelPath(path: string): boolean {
  return modelFileName(path, SERVED_ROUTE) !== null;
}

/** Answers GET/HEAD of a web route (isWebPath); `modelDir`: the model the server runs. */
export async function serveWeb(path: string, req: IncomingMessage, res: ServerResponse, modelDir: string): Promise<void> {
  const bundled = modelFileName(path, MODEL_ROUTE);
  if (bundled !== null) return serveModelFile(await bundledFiles(), bundled, req, res);
  const served = modelFileName(path, SERVED_ROUTE);
  if (served !== null) return serveModelFile(await servedFiles(modelDir), served, req, res);
  const text = await assetText(path, ASSETS[path]!);
  const body = Buffer.from(text, 'utf8');
  res.writeHead(200, { 'Content-Type': ASSETS[path]!.type, 'Content-Length': String(body.byteLength), ...PAGE_HEADERS });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/**
 * One of a model's files (`name` from the URL, still percent-encoded), whole or a single byte
 * range (`Range: bytes=a-b`), with an ETag (size and modification time, as nginx makes them) that
 * the tab's cache keys its copy by; or, for the empty name, the list of files as JSON. Only a
 * name in `files` is served: nothing else on disk is reachable.
 */
async function serveModelFile(files: Map<string, string>, name: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const common = { 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache' };
  if (name === '') {
    const body = Buffer.from(JSON.stringify({ files: [...files.keys()].sort() }), 'utf8');
    res.writeHead(200, { ...common, 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(body.byteLength) });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  let decoded: string | null = null;
  try {
    decoded = decodeURIComponent(name);
  } catch {
    // a malformed escape: no such file
  }
  const file = decoded === null ? undefined : files.get(decoded);
  if (file === undefined) throw new ApiError(404, `no model file ${JSON.stringify(name.slice(0, 120))} here; GET the folder for its list`, 'invalid_request_error', null, 'not_found');
  const stat = statSync(file);
  const size = stat.size;
  const type = file.endsWith('.json') ? 'application/json; charset=utf-8' : 'application/octet-stream';
  const etag = `"${size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
  const range = req.headers['range'];
  let start = 0;
  let end = size - 1;
  let status = 200;
  if (range !== undefined) {
    const m = /^bytes=(\d+)-(\d*)$/.exec(range.trim());
    if (!m || Number(m[1]) >= size || (m[2] !== '' && Number(m[2]) < Number(m[1]))) {
      throw new ApiError(416, `the range '${range.slice(0, 80)}' is not one range inside the file's ${size} bytes (bytes=first-last)`,
        'invalid_request_error', null, 'range_not_satisfiable', { 'Content-Range': `bytes */${size}` });
    }
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(size - 1, Number(m[2]));
    status = 206;
  }
  const headers: Record<string, string> = { ...common, 'Content-Type': type, 'Accept-Ranges': 'bytes', ETag: etag, 'Content-Length': String(Math.max(0, end - start + 1)) };
  if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return;
  }
  createReadStream(file, { start, end }).on('error', () => res.destroy()).pipe(res);
}
