/**
 * Where a model's files are read from: the disk in Node (`diskFiles`), or, in a browser tab,
 * files the user picked, fetched by HTTP range requests, or held in the tab's cache
 * (src/web/sources.ts). The model's loaders (config, safetensors, GGUF) and the tokenizer's read
 * through it, so the same code runs in both.
 *
 * Every read is asynchronous and positional: a tab can only read a picked file (`File.slice()`)
 * or a URL (a `Range` request) that way, and a loader reads a tensor's bytes a staging buffer at a
 * time, so a model never has to be in host memory whole, in Node or in a tab.
 */
import { existsSync } from 'node:fs';
import { open, readFile, readdir } from 'node:fs/promises';

/**
 * A model's files: the config and tokenizer JSON, and the weights by positional reads. Paths
 * are the folder's path joined with a file name (node:path's rules; the browser build gives a
 * page's files paths under a folder of their own, src/web/sources.ts).
 */
export interface ModelSource {
  /** Whether a file or folder is at `path`. */
  exists(path: string): Promise<boolean>;
  /** The names in the folder at `path`. */
  list(path: string): Promise<string[]>;
  /** A file's text (UTF-8); rejects with the reason when it cannot be read. */
  readText(path: string): Promise<string>;
  /** Opens a file for positional reads; rejects with an error with a `code` (ENOENT, EISDIR...) when it cannot. */
  open(path: string): Promise<ModelFile>;
}

export interface ModelFile {
  /** Bytes in the file. */
  readonly size: number;
  /** What is at the path: only a regular file can be read. */
  readonly kind: 'file' | 'directory' | 'other';
  /** Reads up to `length` bytes at byte `position` into `into` at `offset`; resolves to how many (0 at the end). */
  read(into: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  close(): Promise<void>;
}

/** Reads exactly `length` bytes at `position` into `into` (or a new array); `truncated(at)` is the error when the file ends first. */
export async function readExactly(
  file: ModelFile,
  length: number,
  position: number,
  truncated: (at: number) => Error,
  into: Uint8Array = new Uint8Array(length),
): Promise<Uint8Array> {
  let done = 0;
  while (done < length) {
    const n = await file.read(into, done, length - done, position + done);
    if (n <= 0) throw truncated(position + done);
    done += n;
  }
  return into.subarray(0, length);
}

/** The disk, through node:fs: what the CLI, the server and the tests read. */
export const diskFiles: ModelSource = {
  exists: async (path) => existsSync(path),
  list: (path) => readdir(path),
  readText: (path) => readFile(path, 'utf8'),
  async open(path) {
    const handle = await open(path, 'r');
    const stat = await handle.stat();
    return {
      size: stat.size,
      kind: stat.isFile() ? 'file' : stat.isDirectory() ? 'directory' : 'other',
      read: async (into, offset, length, position) => (await handle.read(into, offset, length, position)).bytesRead,
      close: () => handle.close(),
    };
  },
};
