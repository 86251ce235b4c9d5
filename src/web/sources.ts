/**
 * A model folder in a browser tab, as a ModelSource (src/util/files.ts): files fetched from a URL
 * (the server's /engine/model/, the bundled tiny model) or picked by the user
 * (<input type=file webkitdirectory>). The model's loaders read synchronously, one tensor range at
 * a time; a tab can only read files asynchronously, so the files are read into memory first. That
 * suits the models a tab can hold anyway (the tiny model, small checkpoints); the Node engine
 * streams from disk instead.
 */
import type { ModelFile, ModelSource } from '../util/files.ts';

/** The files a loader may look for in a folder; a fetched folder asks for these (missing ones are fine). */
const FOLDER_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors.index.json', 'model.safetensors'];

function notFound(path: string): Error {
  return Object.assign(new Error(`no such file: ${path}`), { code: 'ENOENT' });
}

/** Files held in memory under the folder `dir` (an absolute POSIX path of its own, e.g. /picked). */
export class MemorySource implements ModelSource {
  private readonly files = new Map<string, Uint8Array>();

  constructor(readonly dir: string) {}

  add(name: string, bytes: Uint8Array): void {
    this.files.set(`${this.dir}/${name}`, bytes);
  }

  get names(): string[] {
    return [...this.files.keys()].map((p) => p.slice(this.dir.length + 1));
  }

  get totalBytes(): number {
    let n = 0;
    for (const b of this.files.values()) n += b.byteLength;
    return n;
  }

  private isFolder(path: string): boolean {
    const prefix = path.endsWith('/') ? path : `${path}/`;
    return [...this.files.keys()].some((p) => p.startsWith(prefix));
  }

  exists(path: string): boolean {
    return this.files.has(path) || this.isFolder(path);
  }

  list(path: string): string[] {
    const prefix = path.endsWith('/') ? path : `${path}/`;
    const names = new Set<string>();
    for (const p of this.files.keys()) if (p.startsWith(prefix)) names.add(p.slice(prefix.length).split('/')[0]!);
    return [...names];
  }

  readText(path: string): string {
    const bytes = this.files.get(path);
    if (!bytes) throw notFound(path);
    return new TextDecoder().decode(bytes);
  }

  open(path: string): ModelFile {
    const bytes = this.files.get(path);
    if (!bytes) {
      if (this.isFolder(path)) return { size: 0, kind: 'directory', read: () => 0, close: () => {} };
      throw notFound(path);
    }
    return {
      size: bytes.byteLength,
      kind: 'file',
      read: (into, offset, length, position) => {
        const n = Math.max(0, Math.min(length, bytes.byteLength - position));
        into.set(bytes.subarray(position, position + n), offset);
        return n;
      },
      close: () => {},
    };
  }
}

export interface FetchProgress {
  file: string;
  bytes: number;
}

/**
 * The model folder at `url` (ending in /), fetched file by file: the usual files of a Hugging Face
 * folder, and the shards its model.safetensors.index.json names. Files the server does not have
 * (404) are left out; the loaders say what is missing.
 */
export async function fetchFolder(url: string, dir: string, onProgress?: (p: FetchProgress) => void): Promise<MemorySource> {
  const source = new MemorySource(dir);
  const get = async (name: string): Promise<void> => {
    const res = await fetch(new URL(name, url));
    if (res.status === 404) return;
    if (!res.ok) throw new Error(`${url}${name}: ${res.status} ${res.statusText}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    source.add(name, bytes);
    onProgress?.({ file: name, bytes: bytes.byteLength });
  };
  for (const name of FOLDER_FILES) await get(name);
  if (source.names.includes('model.safetensors.index.json')) {
    const index = JSON.parse(source.readText(`${dir}/model.safetensors.index.json`)) as { weight_map?: Record<string, string> };
    for (const shard of new Set(Object.values(index.weight_map ?? {}))) await get(shard);
  }
  return source;
}

/**
 * The files the user picked (a folder through webkitdirectory, or several files), under `dir`.
 * A picked folder's files carry their path inside it (`webkitRelativePath`, "folder/name"): the
 * folder's own name is dropped, so the files sit at `dir/name` as the loaders expect.
 */
export async function pickedFolder(files: Iterable<File>, dir: string, onProgress?: (p: FetchProgress) => void): Promise<MemorySource> {
  const source = new MemorySource(dir);
  for (const file of files) {
    const relative = file.webkitRelativePath ? file.webkitRelativePath.split('/').slice(1).join('/') : file.name;
    const bytes = new Uint8Array(await file.arrayBuffer());
    source.add(relative, bytes);
    onProgress?.({ file: relative, bytes: bytes.byteLength });
  }
  return source;
}
