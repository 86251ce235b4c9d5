/**
 * The files of a model folder: the error every checkpoint problem is reported
 * with, and the one rule for file names that come from inside the folder
 * (shard names in model.safetensors.index.json, adapter paths). Where the files
 * are read from is a `ModelSource` (src/util/files.ts).
 */
import { isAbsolute, relative, resolve, sep } from 'node:path';

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
