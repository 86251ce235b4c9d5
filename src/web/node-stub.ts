/**
 * What the engine's bundle gets for Node's modules (src/server/web.ts aliases every `node:` import
 * here, and `webgpu`, Dawn's binding). The model code reaches Node only behind its seams (files
 * through a ModelSource, the device given, WGSL imported as text), so in a tab none of this is
 * called, except the few harmless pieces that have a browser meaning: getRandomValues (Web
 * Crypto), fileURLToPath (a URL's path), availableParallelism (the tab's cores). Anything else
 * throws, naming what the page tried to do.
 */

function unavailable(what: string): never {
  throw new Error(`${what} is Node-only and not available in a browser tab`);
}

// node:fs
export const existsSync = (): boolean => unavailable('node:fs existsSync');
export const readFileSync = (): never => unavailable('node:fs readFileSync');
export const readdirSync = (): never => unavailable('node:fs readdirSync');
export const statSync = (): never => unavailable('node:fs statSync');
export const openSync = (): never => unavailable('node:fs openSync');
export const closeSync = (): never => unavailable('node:fs closeSync');
export const writeSync = (): never => unavailable('node:fs writeSync');
export const writeFileSync = (): never => unavailable('node:fs writeFileSync');
export const mkdirSync = (): never => unavailable('node:fs mkdirSync');
export const renameSync = (): never => unavailable('node:fs renameSync');

// node:fs/promises
export const open = (): never => unavailable('node:fs/promises open');
export const readFile = (): never => unavailable('node:fs/promises readFile');
export const readdir = (): never => unavailable('node:fs/promises readdir');

// node:url
export function fileURLToPath(url: string | URL): string {
  return decodeURIComponent(new URL(url).pathname);
}

// node:os
export const availableParallelism = (): number => navigator.hardwareConcurrency || 1;

// node:crypto
export function getRandomValues<T extends ArrayBufferView | null>(array: T): T {
  return crypto.getRandomValues(array as unknown as Uint32Array<ArrayBuffer>) as unknown as T;
}

// node:module
export const createRequire = (): never => unavailable('node:module createRequire');

// node:worker_threads (the tokenizer's worker: a tab tokenizes on its own thread)
export class Worker {
  constructor() {
    unavailable('node:worker_threads Worker');
  }
}

// webgpu (Dawn): a tab has navigator.gpu
export const create = (): never => unavailable("Dawn's create()");
export const globals = {};
