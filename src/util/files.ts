/**
 * Where a model folder's files are read from: the disk in Node (`diskFiles`), or, in a browser
 * tab, the files a page fetched or the user picked (src/web/sources.ts). The model's loaders
 * (config, safetensors) and the tokenizer's read through it, so the same code runs in both.
 */
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';

/**
 * Where a model folder's files are read from: the config and tokenizer JSON, and the weights by
 * positional reads. Paths are the folder's path joined with a file name (node:path's rules; the
 * browser build gives the page's files paths under a folder of their own, src/web/sources.ts).
 * Reads are synchronous, as the loaders read them one tensor range at a time.
 */
export interface ModelSource {
  /** Whether a file or folder is at `path`. */
  exists(path: string): boolean;
  /** The names in the folder at `path`. */
  list(path: string): string[];
  /** A file's text (UTF-8); throws with the reason when it cannot be read. */
  readText(path: string): string;
  /** Opens a file for positional reads; throws an error with a `code` (ENOENT, EISDIR...) when it cannot. */
  open(path: string): ModelFile;
}

export interface ModelFile {
  /** Bytes in the file. */
  readonly size: number;
  /** What is at the path: only a regular file can be read. */
  readonly kind: 'file' | 'directory' | 'other';
  /** Reads up to `length` bytes at byte `position` into `into` at `offset`; returns how many (0 at the end). */
  read(into: Uint8Array, offset: number, length: number, position: number): number;
  close(): void;
}

/** The disk, through node:fs: what the CLI, the server and the tests read. */
export const diskFiles: ModelSource = {
  exists: (path) => existsSync(path),
  list: (path) => readdirSync(path),
  readText: (path) => readFileSync(path, 'utf8'),
  open(path) {
    const fd = openSync(path, 'r');
    const stat = fstatSync(fd);
    return {
      size: stat.size,
      kind: stat.isFile() ? 'file' : stat.isDirectory() ? 'directory' : 'other',
      read: (into, offset, length, position) => readSync(fd, into, offset, length, position),
      close: () => closeSync(fd),
    };
  },
};
