/**
 * The files of a model folder: where they are read from (`ModelSource`: the disk in Node, a
 * page's fetched or picked files in a browser), the error every checkpoint problem is reported
 * with, and the one rule for file names that come from inside the folder (shard names in
 * model.safetensors.index.json, adapter paths).
 */
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';

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

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

/**
 * The absolute path of `name` inside the folder `dir`, or a CheckpointError
 * saying `where` (e.g. "DIR/model.safetensors.index.json: weight_map entry 'x'")
 * named a file outside it. A name comes from a file that was downloaded with the
 * weights, so it is not trusted: an absolute path, or `..` steps that climb out of
 * the folder, are refused before anything is opened.
 *
 * Symbolic links inside the folder are followed wherever they point. Making one
 * takes write access to the folder, which already means control over the weights
 * themselves, and Hugging Face's own download cache is built from them: every
 * file of `snapshots/<revision>/` is a link to `../../blobs/<hash>`.
 */
export function insideFolder(dir: string, name: string, where: string): string {
  const refuse = (why: string): never => {
    throw new CheckpointError(
      `${where}: names ${JSON.stringify(name)}, ${why}; it must be a file inside the model folder ${resolve(dir)}`,
    );
  };
  if (name.length === 0) refuse('an empty file name');
  if (name.includes('\0')) refuse('a name with a NUL character');
  if (isAbsolute(name)) refuse('an absolute path');
  const root = resolve(dir);
  const path = resolve(root, name);
  const rel = relative(root, path);
  if (rel === '' || rel === '..' || rel.startsWith('..' + sep) || isAbsolute(rel)) refuse('which is outside the model folder');
  return path;
}
