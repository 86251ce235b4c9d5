/**
 * A safetensors reader and writer of our own. The format: an 8-byte little-endian
 * header length N, N bytes of JSON header mapping each tensor name to
 * { dtype, shape, data_offsets: [begin, end] } (offsets relative to the data
 * section), then the raw little-endian tensor data.
 *
 * Tensors are read with positional reads on demand (no mmap: idle file pages
 * get evicted on small VMs), so a loader holds one tensor at a time in memory.
 * Every inconsistency is reported with the file and tensor it concerns.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import type { WeightDType } from '../gpu/buffers.ts';
import { diskFiles, readExactly, type ModelFile, type ModelSource } from '../util/files.ts';
import { CheckpointError, insideFolder } from './files.ts';

export { CheckpointError } from './files.ts';

/** A tensor's dtype: a weight format, or raw bytes (the codes of a quantized folder, src/model/quantized.ts). */
export type StoredDType = WeightDType | 'u8';

const DTYPES: Record<string, { dtype: StoredDType; bytes: number }> = {
  F32: { dtype: 'f32', bytes: 4 },
  F16: { dtype: 'f16', bytes: 2 },
  BF16: { dtype: 'bf16', bytes: 2 },
  U8: { dtype: 'u8', bytes: 1 },
};
const KNOWN_UNSUPPORTED = ['F64', 'I64', 'I32', 'I16', 'I8', 'U16', 'U32', 'U64', 'BOOL', 'F8_E4M3', 'F8_E5M2'];
const MAX_HEADER = 100 * 2 ** 20; // the format's own limit

export interface TensorEntry {
  name: string;
  dtype: StoredDType;
  shape: number[];
  file: string;
  /** Absolute byte offset of the data in `file`. */
  offset: number;
  byteLength: number;
}

function readBytes(fd: ModelFile, file: string, length: number, position: number, into?: Uint8Array): Promise<Uint8Array> {
  return readExactly(fd, length, position, (at) => new CheckpointError(`${file}: unexpected end of file at byte ${at} (truncated?)`), into);
}

/** Parses and validates one file's header. */
async function readHeader(file: string, fd: ModelFile): Promise<TensorEntry[]> {
  const size = fd.size;
  if (size < 8) throw new CheckpointError(`${file}: truncated: ${size} bytes, shorter than the 8-byte header length`);
  const lenBytes = await readBytes(fd, file, 8, 0);
  const n = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
  if (n > MAX_HEADER) throw new CheckpointError(`${file}: header length ${n} is implausible (over 100 MiB): not a safetensors file?`);
  if (8 + n > size) {
    throw new CheckpointError(`${file}: header length ${n} runs past the end of the file (${size} bytes): truncated or not a safetensors file`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(await readBytes(fd, file, n, 8)));
  } catch (e) {
    throw new CheckpointError(`${file}: header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new CheckpointError(`${file}: header must be a JSON object`);
  }
  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  const entries: TensorEntry[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') continue;
    const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const where = `${file}: tensor '${name}'`;
    if (typeof v !== 'object' || v === null) throw new CheckpointError(`${where}: entry is not an object`);
    const info = typeof v.dtype === 'string' ? DTYPES[v.dtype] : undefined;
    if (!info) {
      const what = KNOWN_UNSUPPORTED.includes(String(v.dtype)) ? 'is not supported' : 'is unknown';
      throw new CheckpointError(`${where}: dtype ${JSON.stringify(v.dtype)} ${what}; weights must be F16, BF16 or F32 (U8 only as a quantized folder's codes)`);
    }
    if (!Array.isArray(v.shape) || !v.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new CheckpointError(`${where}: shape ${JSON.stringify(v.shape)} is not a list of non-negative integers`);
    }
    const off = v.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0) || off[1] < off[0]) {
      throw new CheckpointError(`${where}: data_offsets ${JSON.stringify(off)} is not [begin, end] with begin <= end`);
    }
    const shape = v.shape as number[];
    const expected = shape.reduce((a, b) => a * b, 1) * info.bytes;
    const [begin, end] = off as [number, number];
    if (end - begin !== expected) {
      throw new CheckpointError(`${where}: data_offsets span ${end - begin} bytes, but shape [${shape}] of ${v.dtype} needs ${expected}`);
    }
    if (end > dataSize) {
      throw new CheckpointError(`${where}: data ends at byte ${end} of the data section, which holds only ${dataSize} bytes (truncated file?)`);
    }
    entries.push({ name, dtype: info.dtype, shape, file, offset: dataStart + begin, byteLength: expected });
  }
  const sorted = [...entries].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.offset < prev.offset + prev.byteLength) {
      throw new CheckpointError(`${file}: tensors '${prev.name}' and '${cur.name}' overlap in the data section`);
    }
  }
  return entries;
}

/** The tensors of a checkpoint folder: one *.safetensors file, or shards listed by model.safetensors.index.json. */
export class Checkpoint {
  readonly tensors = new Map<string, TensorEntry>();
  private fds = new Map<string, ModelFile>();

  private constructor(
    readonly dir: string,
    private readonly files: ModelSource,
  ) {}

  /** The checkpoint in folder `dir`, read from `files` (the disk unless given). */
  static async open(dir: string, files: ModelSource = diskFiles): Promise<Checkpoint> {
    if (!(await files.exists(dir))) throw new CheckpointError(`model folder ${dir} does not exist`);
    const ckpt = new Checkpoint(dir, files);
    const index = join(dir, 'model.safetensors.index.json');
    try {
      if (await files.exists(index)) await ckpt.openSharded(index);
      else {
        const weights = (await files.list(dir)).filter((f) => f.endsWith('.safetensors')).sort();
        if (weights.length === 0) {
          throw new CheckpointError(
            `${dir}: no *.safetensors files. Download the checkpoint's safetensors weights (PyTorch .bin files are not read)`,
          );
        }
        if (weights.length > 1 && !weights.includes('model.safetensors')) {
          throw new CheckpointError(`${dir}: several .safetensors files but no model.safetensors.index.json to say which tensor is where`);
        }
        await ckpt.addFile(join(dir, weights.includes('model.safetensors') ? 'model.safetensors' : weights[0]!));
      }
    } catch (e) {
      ckpt.close();
      throw e;
    }
    return ckpt;
  }

  /** One safetensors file on its own (an adapter's adapter_model.safetensors), not a model folder. */
  static async openFile(path: string, files: ModelSource = diskFiles): Promise<Checkpoint> {
    const ckpt = new Checkpoint(dirname(path), files);
    try {
      await ckpt.addFile(path);
    } catch (e) {
      ckpt.close();
      throw e;
    }
    return ckpt;
  }

  private async openSharded(index: string): Promise<void> {
    let weightMap: Record<string, unknown>;
    try {
      const parsed = JSON.parse(await this.files.readText(index)) as { weight_map?: Record<string, unknown> };
      if (!parsed.weight_map || typeof parsed.weight_map !== 'object') throw new Error('no "weight_map" object');
      weightMap = parsed.weight_map;
    } catch (e) {
      throw new CheckpointError(`${index}: ${(e as Error).message}`);
    }
    // Each shard is opened once, under the name the first entry naming it gives.
    const shards = new Map<string, string>();
    for (const [name, value] of Object.entries(weightMap)) {
      const where = `${index}: weight_map entry '${name}'`;
      if (typeof value !== 'string') throw new CheckpointError(`${where}: the shard must be a file name; got ${JSON.stringify(value)}`);
      if (!shards.has(value)) shards.set(value, insideFolder(this.dir, value, where));
    }
    for (const [shard, path] of [...shards].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (!(await this.files.exists(path))) throw new CheckpointError(`${index}: names shard ${shard}, which is missing from ${this.dir}`);
      await this.addFile(path);
    }
    for (const [name, shard] of Object.entries(weightMap)) {
      const entry = this.tensors.get(name);
      if (!entry) throw new CheckpointError(`${index}: tensor '${name}' is not in ${shard}`);
      if (entry.file !== shards.get(shard as string)) {
        throw new CheckpointError(`${index}: maps '${name}' to ${shard}, but it is in ${relative(this.dir, entry.file)}`);
      }
    }
    for (const name of this.tensors.keys()) {
      if (!(name in weightMap)) throw new CheckpointError(`${index}: tensor '${name}' is in a shard but not in the weight_map`);
    }
  }

  private async addFile(path: string): Promise<void> {
    let fd: ModelFile;
    try {
      fd = await this.files.open(path);
    } catch (e) {
      throw new CheckpointError(`${path}: cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    this.fds.set(path, fd);
    if (fd.kind !== 'file') {
      const what = fd.kind === 'directory' ? 'a directory' : 'not a regular file';
      throw new CheckpointError(`${path}: is ${what}, not a safetensors file (a checkpoint's weights are plain files)`);
    }
    for (const e of await readHeader(path, fd)) {
      const dup = this.tensors.get(e.name);
      if (dup) throw new CheckpointError(`tensor '${e.name}' appears in both ${dup.file} and ${e.file}`);
      this.tensors.set(e.name, e);
    }
  }

  get(name: string): TensorEntry {
    const e = this.tensors.get(name);
    if (!e) throw new CheckpointError(`${this.dir}: tensor '${name}' is missing`);
    return e;
  }

  /** A tensor that must hold float weights (F16, BF16 or F32), not a quantized folder's codes. */
  float(name: string): TensorEntry & { dtype: WeightDType } {
    const e = this.get(name);
    if (e.dtype === 'u8') throw new CheckpointError(`${e.file}: tensor '${name}' is U8 (quantized codes) where F16, BF16 or F32 weights belong`);
    return e as TensorEntry & { dtype: WeightDType };
  }

  /** Reads a tensor's raw bytes (or a byte range of them) into `into` or a new array. */
  async read(name: string, into?: Uint8Array, byteOffset = 0, byteLength?: number): Promise<Uint8Array> {
    const e = this.get(name);
    const len = byteLength ?? e.byteLength - byteOffset;
    if (byteOffset + len > e.byteLength) throw new RangeError(`read past the end of '${name}'`);
    const fd = this.fds.get(e.file)!;
    return readBytes(fd, e.file, len, e.offset + byteOffset, into?.subarray(0, len));
  }

  get totalBytes(): number {
    let n = 0;
    for (const e of this.tensors.values()) n += e.byteLength;
    return n;
  }

  close(): void {
    // Read-only handles: nothing is lost if a close fails, so it is not waited for.
    for (const fd of this.fds.values()) void fd.close().catch(() => {});
    this.fds.clear();
  }
}

export interface TensorSpec {
  name: string;
  dtype: 'F32' | 'F16' | 'BF16' | 'U8';
  shape: number[];
}

/**
 * Writes a safetensors file tensor by tensor: `data(spec)` is called once per
 * tensor in order and must return exactly its bytes, so a multi-gigabyte file
 * never has to be in memory at once.
 */
export async function writeSafetensors(
  path: string,
  specs: TensorSpec[],
  data: (spec: TensorSpec, index: number) => Uint8Array | Promise<Uint8Array>,
  metadata: Record<string, string> = { format: 'pt' },
): Promise<number> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const s of specs) {
    const bytes = s.shape.reduce((a, b) => a * b, 1) * DTYPES[s.dtype]!.bytes;
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // keeps the data 8-byte aligned, as HF's writer does
  const jsonBytes = new TextEncoder().encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, jsonBytes);
    for (const [i, s] of specs.entries()) {
      const bytes = await data(s, i);
      const want = (header[s.name] as { data_offsets: number[] }).data_offsets;
      if (bytes.byteLength !== want[1]! - want[0]!) throw new Error(`${s.name}: got ${bytes.byteLength} bytes, expected ${want[1]! - want[0]!}`);
      let done = 0;
      while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
    }
  } finally {
    closeSync(fd);
  }
  return 8 + jsonBytes.byteLength + offset;
}
