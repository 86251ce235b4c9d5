/**
 * Writing a GGUF file (the layout gguf.ts reads), streaming: the header is built in memory (for
 * a vocabulary of 32000 pieces it is about a megabyte), then each tensor's bytes are written as
 * they come, so tests and scripts can make files larger than they could hold. Values carry their
 * GGUF type (`gv.u32(7)`, not 7), as u32, i32 and f32 are all numbers in JavaScript.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { GGML_TYPES, type GgmlType } from '../kernels/ggml/types.ts';
import {
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_FIXED_BYTES,
  GGUF_MAGIC,
  GGUF_MAX_DIMS,
  GGUF_TYPE_IDS,
  type GgufArray,
  type GgufBigIntType,
  type GgufNumberType,
  type GgufValue,
} from './gguf.ts';

/** Typed metadata values, for writing: `['llama.block_count', gv.u32(32)]`. */
export const gv = {
  u8: (value: number): GgufValue => ({ type: 'u8', value }),
  i8: (value: number): GgufValue => ({ type: 'i8', value }),
  u16: (value: number): GgufValue => ({ type: 'u16', value }),
  i16: (value: number): GgufValue => ({ type: 'i16', value }),
  u32: (value: number): GgufValue => ({ type: 'u32', value }),
  i32: (value: number): GgufValue => ({ type: 'i32', value }),
  f32: (value: number): GgufValue => ({ type: 'f32', value }),
  f64: (value: number): GgufValue => ({ type: 'f64', value }),
  u64: (value: bigint | number): GgufValue => ({ type: 'u64', value: BigInt(value) }),
  i64: (value: bigint | number): GgufValue => ({ type: 'i64', value: BigInt(value) }),
  bool: (value: boolean): GgufValue => ({ type: 'bool', value }),
  string: (value: string): GgufValue => ({ type: 'string', value }),
  strings: (value: readonly string[]): GgufArray => ({ type: 'array', itemType: 'string', value }),
  bools: (value: readonly boolean[]): GgufArray => ({ type: 'array', itemType: 'bool', value }),
  numbers: (itemType: GgufNumberType, value: ArrayLike<number>): GgufArray => ({ type: 'array', itemType, value }),
  bigints: (itemType: GgufBigIntType, value: ArrayLike<bigint>): GgufArray => ({ type: 'array', itemType, value }),
  arrays: (value: readonly GgufArray[]): GgufArray => ({ type: 'array', itemType: 'array', value }),
};

export interface GgufTensorToWrite {
  name: string;
  type: GgmlType;
  /** Innermost first (ne0 = a row's length), as the file lists them. */
  dims: number[];
  /** The tensor's bytes in ggml's layout, or a function giving them when the tensor is written. */
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

export interface GgufContents {
  metadata: Array<[string, GgufValue]>;
  tensors?: GgufTensorToWrite[];
  /** Data alignment (a power of two); a value other than 32 is written as general.alignment. */
  alignment?: number;
  /** 3 (default) or 2: the layouts are the same. */
  version?: 2 | 3;
}

const INT_RANGES: Record<'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32', [number, number]> = {
  u8: [0, 0xff], i8: [-0x80, 0x7f], u16: [0, 0xffff], i16: [-0x8000, 0x7fff], u32: [0, 0xffffffff], i32: [-0x80000000, 0x7fffffff],
};

/** The header in memory: a buffer that doubles as it fills. */
class ByteSink {
  buf = new Uint8Array(1 << 16);
  view = new DataView(this.buf.buffer);
  len = 0;
  private readonly encoder = new TextEncoder();

  private room(n: number): number {
    if (this.len + n > this.buf.byteLength) {
      let size = this.buf.byteLength;
      while (size < this.len + n) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
      this.view = new DataView(next.buffer);
    }
    const at = this.len;
    this.len += n;
    return at;
  }

  // room() first, always: it may replace this.buf and this.view.
  u32(v: number): void {
    const at = this.room(4);
    this.view.setUint32(at, v, true);
  }
  u64(v: number | bigint): void {
    const at = this.room(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }
  bytes(b: Uint8Array): void {
    const at = this.room(b.byteLength);
    this.buf.set(b, at);
  }
  string(s: string): void {
    const b = this.encoder.encode(s);
    this.u64(b.byteLength);
    this.bytes(b);
  }

  scalar(type: Exclude<GgufValue['type'], 'array'>, v: unknown, what: string): void {
    if (type === 'string') {
      if (typeof v !== 'string') throw new TypeError(`${what}: a string value must be a string, got ${typeof v}`);
      this.string(v);
      return;
    }
    if (type === 'bool') {
      if (typeof v !== 'boolean') throw new TypeError(`${what}: a bool value must be a boolean, got ${typeof v}`);
      const at = this.room(1);
      this.buf[at] = v ? 1 : 0;
      return;
    }
    if (type === 'u64' || type === 'i64') {
      if (typeof v !== 'bigint') throw new TypeError(`${what}: a ${type} value must be a bigint, got ${typeof v}`);
      const ok = type === 'u64' ? v >= 0n && v < 1n << 64n : v >= -(1n << 63n) && v < 1n << 63n;
      if (!ok) throw new RangeError(`${what}: ${v} does not fit a ${type}`);
      const at = this.room(8);
      if (type === 'u64') this.view.setBigUint64(at, v, true);
      else this.view.setBigInt64(at, v, true);
      return;
    }
    if (typeof v !== 'number') throw new TypeError(`${what}: a ${type} value must be a number, got ${typeof v}`);
    if (type !== 'f32' && type !== 'f64') {
      const [lo, hi] = INT_RANGES[type];
      if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`${what}: ${v} is not a ${type} (an integer in ${lo}..${hi})`);
    }
    const at = this.room(GGUF_FIXED_BYTES[type]!);
    const d = this.view;
    switch (type) {
      case 'u8': d.setUint8(at, v); break;
      case 'i8': d.setInt8(at, v); break;
      case 'u16': d.setUint16(at, v, true); break;
      case 'i16': d.setInt16(at, v, true); break;
      case 'u32': d.setUint32(at, v, true); break;
      case 'i32': d.setInt32(at, v, true); break;
      case 'f32': d.setFloat32(at, v, true); break;
      case 'f64': d.setFloat64(at, v, true); break;
    }
  }

  /** A value without its type id (the caller wrote that). */
  value(v: GgufValue, what: string): void {
    if (v.type !== 'array') {
      this.scalar(v.type, v.value, what);
      return;
    }
    this.u32(GGUF_TYPE_IDS[v.itemType]);
    const items = v.value as ArrayLike<unknown>;
    this.u64(items.length);
    for (let i = 0; i < items.length; i++) {
      if (v.itemType === 'array') {
        // An array item is an array value as a whole: its own item type, count and items.
        this.value(items[i] as GgufArray, `${what}[${i}]`);
      } else {
        this.scalar(v.itemType, items[i], `${what}[${i}]`);
      }
    }
  }
}

/** Bytes of a tensor of `type` and `dims`, checked to be whole rows of blocks. */
export function ggufTensorBytes(type: GgmlType, dims: readonly number[], name = 'tensor'): number {
  const t = GGML_TYPES[type];
  if (dims.length > GGUF_MAX_DIMS) throw new RangeError(`${name}: ${dims.length} dimensions; GGUF allows at most ${GGUF_MAX_DIMS}`);
  if (dims.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new RangeError(`${name}: dims [${dims.join(', ')}] must be non-negative integers`);
  const cols = dims[0] ?? 1;
  if (cols % t.blockValues !== 0) throw new RangeError(`${name}: rows of ${cols} values are not whole ${type} blocks of ${t.blockValues}`);
  const count = dims.reduce((a, b) => a * b, 1);
  return (count / t.blockValues) * t.blockBytes;
}

/**
 * Writes a GGUF file at `path`: the metadata in the order given, then the tensors in the order
 * given, each at the next multiple of the alignment.
 */
export async function writeGguf(path: string, contents: GgufContents): Promise<void> {
  const alignment = contents.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0 || alignment > 0x80000000) {
    throw new RangeError(`${path}: alignment ${alignment} is not a power of two`);
  }
  const metadata = [...contents.metadata];
  const given = metadata.find(([k]) => k === 'general.alignment')?.[1];
  if (given !== undefined) {
    if (given.type !== 'u32' || given.value !== alignment) throw new Error(`${path}: metadata general.alignment (${JSON.stringify(given, (_, x) => (typeof x === 'bigint' ? String(x) : x))}) disagrees with alignment ${alignment}`);
  } else if (alignment !== GGUF_DEFAULT_ALIGNMENT) {
    metadata.push(['general.alignment', gv.u32(alignment)]);
  }
  const keys = new Set<string>();
  for (const [k] of metadata) {
    if (k.length === 0) throw new Error(`${path}: an empty metadata key`);
    if (keys.has(k)) throw new Error(`${path}: metadata key '${k}' given twice`);
    keys.add(k);
  }
  const tensors = contents.tensors ?? [];
  const names = new Set<string>();
  const sizes = tensors.map((t) => {
    if (names.has(t.name)) throw new Error(`${path}: tensor '${t.name}' given twice`);
    names.add(t.name);
    return ggufTensorBytes(t.type, t.dims, `${path}: tensor '${t.name}'`);
  });

  const h = new ByteSink();
  h.u32(GGUF_MAGIC);
  h.u32(contents.version ?? 3);
  h.u64(tensors.length);
  h.u64(metadata.length);
  for (const [key, value] of metadata) {
    h.string(key);
    h.u32(GGUF_TYPE_IDS[value.type]);
    h.value(value, `${path}: metadata '${key}'`);
  }
  const pad = (n: number) => Math.ceil(n / alignment) * alignment;
  let offset = 0;
  tensors.forEach((t, i) => {
    h.string(t.name);
    h.u32(t.dims.length);
    for (const d of t.dims) h.u64(d);
    h.u32(GGML_TYPES[t.type].id);
    h.u64(offset);
    offset = pad(offset + sizes[i]!);
  });
  const headerBytes = pad(h.len);

  const fd = openSync(path, 'w');
  try {
    const zeros = new Uint8Array(alignment);
    let written = 0;
    const write = (b: Uint8Array) => {
      let done = 0;
      while (done < b.byteLength) done += writeSync(fd, b, done, b.byteLength - done);
      written += b.byteLength;
    };
    write(h.buf.subarray(0, h.len));
    write(zeros.subarray(0, headerBytes - h.len));
    for (const [i, t] of tensors.entries()) {
      const data = typeof t.data === 'function' ? await t.data() : t.data;
      if (data.byteLength !== sizes[i]) {
        throw new Error(`${path}: tensor '${t.name}' (${t.type}, dims [${t.dims.join(', ')}]) needs ${sizes[i]} bytes, its data has ${data.byteLength}`);
      }
      write(data);
      write(zeros.subarray(0, pad(written) - written));
    }
  } finally {
    closeSync(fd);
  }
}
