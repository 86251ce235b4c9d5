/**
 * The server's web pages, read-only and without an API key (they hold no secrets; the API calls
 * they make carry the key the user types in):
 *   GET /                 the chat page (web/chat.html), streaming from /v1/chat/completions
 *   GET /engine           the engine in the tab (src/web/engine.html): the model on the page's own WebGPU
 *   GET /web/<asset>      the pages' stylesheet and their scripts, bundled from TypeScript by esbuild
 *                         on first request (then kept in memory)
 *   GET /engine/model/<f> the bundled tiny model's files, for the engine page to load (config.json,
 *                         model.safetensors; Range requests answered, as the page reads tensors by range)
 * Nothing else on disk is reachable: every path maps to a fixed file, never to a name from the URL.
 */
import { readFileSync, statSync, createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import { BUNDLED_MODEL_DIR } from '../generator.ts';
import { ApiError } from './errors.ts';

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));

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
  '/engine': { type: 'text/html; charset=utf-8', make: () => readFileSync(here('../web/engine.html'), 'utf8') },
  '/web/page.css': { type: 'text/css; charset=utf-8', make: () => readFileSync(here('./web/page.css'), 'utf8') },
  ...Object.fromEntries(
    Object.entries(SCRIPTS).map(([path, entry]) => [path, { type: 'text/javascript; charset=utf-8', make: () => bundle(entry) }]),
  ),
};

/** The bundled model's files the engine page may read (its golden fixtures are not served). */
const MODEL_FILES = ['config.json', 'model.safetensors'];
export const MODEL_ROUTE = '/engine/model/';

/**
 * Same-origin only: the pages load nothing from elsewhere and may not be framed by another site
 * (a framed chat page could be steered by clicks). `wasm-unsafe-eval` is not needed; WebGPU is.
 */
const PAGE_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
};

const made = new Map<string, Promise<string>>();

/**
 * Bundles one entry with esbuild (what tsx already runs on), for browsers with WebGPU (ES2022).
 * The engine's `.wgsl` kernels are imported as text (web/wgsl.ts); `node:` modules are replaced by
 * src/web/node-stub.ts, which throws if a Node-only path is ever taken in the page.
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
    loader: { '.wgsl': 'text' },
    alias: nodeStubs(),
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  return result.outputFiles[0]!.text;
}

/** Every `node:` module the model code imports, mapped to the one stub. */
function nodeStubs(): Record<string, string> {
  const stub = here('../web/node-stub.ts');
  const modules = ['fs', 'path', 'url', 'os', 'crypto', 'module', 'worker_threads'];
  return Object.fromEntries(modules.flatMap((m) => [[`node:${m}`, stub], [m, stub]]));
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

/** Whether GET/HEAD `path` is one of the pages' routes. */
export function isWebPath(path: string): boolean {
  return path in ASSETS || (path.startsWith(MODEL_ROUTE) && MODEL_FILES.includes(path.slice(MODEL_ROUTE.length)));
}

/** Answers GET/HEAD of a web route (isWebPath). */
export async function serveWeb(path: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (path.startsWith(MODEL_ROUTE)) return serveModelFile(path.slice(MODEL_ROUTE.length), req, res);
  const text = await assetText(path, ASSETS[path]!);
  const body = Buffer.from(text, 'utf8');
  res.writeHead(200, { 'Content-Type': ASSETS[path]!.type, 'Content-Length': String(body.byteLength), ...PAGE_HEADERS });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** One of the bundled model's files, whole or a single byte range (`Range: bytes=a-b`). */
function serveModelFile(name: string, req: IncomingMessage, res: ServerResponse): void {
  const file = `${BUNDLED_MODEL_DIR}${name}`;
  const size = statSync(file).size;
  const type = name.endsWith('.json') ? 'application/json; charset=utf-8' : 'application/octet-stream';
  const common = { 'Content-Type': type, 'Accept-Ranges': 'bytes', 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache' };
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
  const headers: Record<string, string> = { ...common, 'Content-Length': String(end - start + 1) };
  if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  res.writeHead(status, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  createReadStream(file, { start, end }).on('error', () => res.destroy()).pipe(res);
}
