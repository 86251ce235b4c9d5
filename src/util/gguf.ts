/**
 * Reading a GGUF file (llama.cpp's container: ggml/include/gguf.h, docs/gguf.md): its header, its
 * metadata (typed key-value pairs) and its tensor infos, by positional reads through a
 * ModelSource, so the same code reads the disk in Node and a picked file in a browser tab.
 *
 * Layout, little-endian, versions 2 and 3 (v1 had 32-bit counts; v3 only allowed big-endian
 * files, which this reader refuses):
 *
 *   "GGUF"  version u32  tensor_count u64  kv_count u64
 *   kv_count  x { key: string, type: u32, value }        string = u64 length + UTF-8 bytes
 *   tensor_count x { name: string, n_dims: u32, dims: u64 x n_dims (ne0 first: a row's length),
 *                    type: u32 (ggml type id), offset: u64 (from the data section's start) }
 *   padding to `general.alignment` (default 32), then the data section.
 *
 * The file may come from anywhere, so nothing it says is trusted: every count and length is
 * checked against the bytes left in the file before anything is allocated, and a malformed file
 * gives one Error naming the file and what is wrong (never a RangeError from a typed array, a
 * huge allocation or a hang). The header is read from the file's start, a prefix that doubles
 * until the header fits (the 32000 strings of a vocabulary are a few MB; the weights are never
 * read here).
 */
import { ggmlTypeName, ggmlTypeOf, GGML_TYPES, type GgmlType } from '../kernels/ggml/types.ts';
import { diskFiles, readExactly, type ModelFile, type ModelSource } from './files.ts';

/** Scalar value types whose values are JavaScript numbers. */
export type GgufNumberType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64';
/** 64-bit integer types: bigints, as a u64 may exceed 2^53. */
export type GgufBigIntType = 'u64' | 'i64';
export type GgufScalarType = GgufNumberType | GgufBigIntType | 'bool' | 'string';

/**
 * One metadata value with its GGUF type: the writer needs the type (u32 and i32 are both numbers
 * here), and the reader keeps it so that a reader's check of the type is possible. Numeric arrays
 * are typed arrays when read; the writer accepts any list of numbers.
 */
export type GgufValue =
  | { type: GgufNumberType; value: number }
  | { type: GgufBigIntType; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | GgufArray;

export type GgufArray =
  | { type: 'array'; itemType: GgufNumberType; value: ArrayLike<number> }
  | { type: 'array'; itemType: GgufBigIntType; value: ArrayLike<bigint> }
  | { type: 'array'; itemType: 'bool'; value: readonly boolean[] }
  | { type: 'array'; itemType: 'string'; value: readonly string[] }
  | { type: 'array'; itemType: 'array'; value: readonly GgufArray[] };

/** GGUF's value type ids (gguf.h `enum gguf_type`). */
export const GGUF_TYPE_IDS = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12,
} as const satisfies Record<GgufScalarType | 'array', number>;

export type GgufValueType = keyof typeof GGUF_TYPE_IDS;

const TYPE_BY_ID = new Map<number, GgufValueType>(Object.entries(GGUF_TYPE_IDS).map(([k, v]) => [v, k as GgufValueType]));

/** Bytes of one value of a fixed-size type; strings and arrays have a u64 length first. */
export const GGUF_FIXED_BYTES: Readonly<Partial<Record<GgufValueType, number>>> = {
  u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8,
};

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS: a tensor info with more dimensions is malformed. */
export const GGUF_MAX_DIMS = 4;
/** Arrays inside arrays deeper than this are refused: no format in use nests at all. */
const MAX_ARRAY_DEPTH = 4;
/** No metadata string comes near this (a chat template is kilobytes); a longer one is a damaged length. */
const MAX_STRING_BYTES = 64 * 1024 * 1024;
/** The header is first read this far, then twice as far (at least past the item it stopped at) until it is whole. */
const HEADER_FIRST_READ = 1 << 20;

export interface GgufTensorInfo {
  name: string;
  /** The ggml type id in the file. */
  typeId: number;
  /** That type, or null when this project does not read it (the loader refuses it by name: ggmlTypeName(typeId)). */
  type: GgmlType | null;
  /** Sizes, innermost first as ggml lists them: dims[0] (ne0) is a row's length, the number of columns. */
  dims: number[];
  /** Number of values (product of dims). */
  count: number;
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  /** Bytes of its data; null for a type this project cannot size (type null). */
  byteLength: number | null;
}

/** A malformed or unreadable GGUF file; the message starts with the file's path. */
export class GgufError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    // Names read from a damaged file may hold any bytes: control characters are shown escaped, so
    // the error stays one line.
    super(`${path}: ${message.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)}`);
    this.name = 'GgufError';
  }
}

/** The header needs bytes up to `end`, past the prefix read so far: open() reads more and parses again. */
class NeedMoreBytes {
  constructor(readonly end: number) {}
}

/**
 * Sequential reads of the header out of the file's first bytes (`prefix`). Reads are
 * asynchronous and the parse is not: when the header runs past the prefix, the parse stops
 * (NeedMoreBytes) and GgufFile.open starts it again over a longer prefix.
 */
class HeaderReader {
  pos = 0;
  private readonly view: DataView;
  // ignoreBOM keeps a leading U+FEFF: it is a piece of its own in Llama's vocabulary.
  private readonly utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
  private readonly strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

  constructor(
    private readonly buf: Uint8Array,
    private readonly size: number,
    private readonly path: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  fail(message: string): never {
    throw new GgufError(this.path, message);
  }

  get left(): number {
    return this.size - this.pos;
  }

  /** Bytes pos .. pos + n, as an index into the prefix; `what` names them for the truncation error. */
  private need(n: number, what: string): number {
    if (n > this.left) {
      this.fail(`truncated: ${what} at byte ${this.pos} needs ${n} bytes, the file has ${Math.max(0, this.left)} left (file size ${this.size}); the file is damaged or was not fully copied`);
    }
    if (this.pos + n > this.buf.byteLength) throw new NeedMoreBytes(this.pos + n);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u8(what: string): number {
    return this.buf[this.need(1, what)]!;
  }
  u32(what: string): number {
    return this.view.getUint32(this.need(4, what), true);
  }
  /** A u64 that must be a safe integer (a count, a length, an offset). */
  u64(what: string): number {
    const v = this.view.getBigUint64(this.need(8, what), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} at byte ${this.pos - 8} is ${v}, beyond any file's size`);
    return Number(v);
  }

  /** A string's bytes, its length first checked against the file. */
  string(what: string, strict: boolean): string {
    const n = this.u64(`${what}'s length`);
    if (n > MAX_STRING_BYTES) this.fail(`${what} at byte ${this.pos - 8} claims ${n} bytes, more than any GGUF metadata string (limit ${MAX_STRING_BYTES})`);
    const at = this.need(n, what);
    const bytes = this.buf.subarray(at, at + n);
    if (!strict) return this.utf8.decode(bytes);
    try {
      return this.strictUtf8.decode(bytes);
    } catch {
      return this.fail(`${what} at byte ${this.pos - n} is not valid UTF-8`);
    }
  }

  scalar(type: GgufScalarType, what: string): number | bigint | boolean | string {
    if (type === 'string') return this.string(what, false);
    const size = GGUF_FIXED_BYTES[type]!;
    const at = this.need(size, what);
    const v = this.view;
    switch (type) {
      case 'u8': return v.getUint8(at);
      case 'i8': return v.getInt8(at);
      case 'u16': return v.getUint16(at, true);
      case 'i16': return v.getInt16(at, true);
      case 'u32': return v.getUint32(at, true);
      case 'i32': return v.getInt32(at, true);
      case 'f32': return v.getFloat32(at, true);
      case 'f64': return v.getFloat64(at, true);
      case 'u64': return v.getBigUint64(at, true);
      case 'i64': return v.getBigInt64(at, true);
      case 'bool': {
        const b = v.getUint8(at);
        if (b > 1) this.fail(`${what} at byte ${this.pos - 1} is a bool of value ${b} (must be 0 or 1)`);
        return b === 1;
      }
    }
  }

  valueType(what: string): GgufValueType {
    const id = this.u32(`${what}'s type`);
    const type = TYPE_BY_ID.get(id);
    if (type === undefined) this.fail(`${what} has value type ${id} at byte ${this.pos - 4}, which GGUF does not define (0..12)`);
    return type;
  }

  value(type: GgufValueType, what: string, depth = 0): GgufValue {
    if (type !== 'array') return { type, value: this.scalar(type, what) } as GgufValue;
    if (depth >= MAX_ARRAY_DEPTH) this.fail(`${what}: arrays nested more than ${MAX_ARRAY_DEPTH} deep`);
    const itemType = this.valueType(`${what}'s items`);
    const n = this.u64(`${what}'s item count`);
    // The smallest an item can be: a fixed size, or a string's or an array's length fields.
    const min = GGUF_FIXED_BYTES[itemType] ?? (itemType === 'string' ? 8 : 12);
    if (n * min > this.left) this.fail(`${what} claims ${n} items of type ${itemType} at byte ${this.pos - 8}: at least ${n * min} bytes, but the file has ${this.left} left`);
    switch (itemType) {
      case 'string': {
        const out: string[] = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.string(`${what}[${i}]`, false);
        return { type, itemType, value: out };
      }
      case 'array': {
        const out: GgufArray[] = [];
        for (let i = 0; i < n; i++) out.push(this.value('array', `${what}[${i}]`, depth + 1) as GgufArray);
        return { type, itemType, value: out };
      }
      case 'bool': {
        const out: boolean[] = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.scalar('bool', `${what}[${i}]`) as boolean;
        return { type, itemType, value: out };
      }
      case 'u64':
      case 'i64': {
        const out = itemType === 'u64' ? new BigUint64Array(n) : new BigInt64Array(n);
        for (let i = 0; i < n; i++) out[i] = this.scalar(itemType, what) as bigint;
        return { type, itemType, value: out };
      }
      default: {
        const out = new NUMBER_ARRAYS[itemType](n);
        for (let i = 0; i < n; i++) out[i] = this.scalar(itemType, what) as number;
        return { type, itemType, value: out };
      }
    }
  }
}

const NUMBER_ARRAYS = {
  u8: Uint8Array, i8: Int8Array, u16: Uint16Array, i16: Int16Array, u32: Uint32Array, i32: Int32Array, f32: Float32Array, f64: Float64Array,
} as const;

const NUMBER_TYPES: readonly GgufValueType[] = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'f64', 'u64', 'i64'];

function describe(v: GgufValue): string {
  return v.type === 'array' ? `an array of ${v.itemType}` : `a ${v.type}`;
}

/** A GGUF file, open for positional reads of its tensors' bytes. */
export class GgufFile {
  /** Metadata in the file's order. */
  readonly metadata: Map<string, GgufValue>;
  /** Tensor infos in the file's order. */
  readonly tensors: Map<string, GgufTensorInfo>;
  /** Bytes in the file. */
  readonly totalBytes: number;

  private constructor(
    readonly path: string,
    readonly version: number,
    readonly alignment: number,
    /** Absolute offset of the data section. */
    readonly dataOffset: number,
    metadata: Map<string, GgufValue>,
    tensors: Map<string, GgufTensorInfo>,
    private file: ModelFile | null,
  ) {
    this.metadata = metadata;
    this.tensors = tensors;
    this.totalBytes = file!.size;
  }

  /** Opens and parses `path` (header, metadata, tensor infos; no tensor data), from `files` (the disk unless given). */
  static async open(path: string, files: ModelSource = diskFiles): Promise<GgufFile> {
    let file: ModelFile;
    try {
      file = await files.open(path);
    } catch (err) {
      throw new GgufError(path, `cannot open it (${(err as Error).message})`);
    }
    try {
      if (file.kind !== 'file') throw new GgufError(path, `is a ${file.kind}, not a GGUF file`);
      let want = Math.min(file.size, HEADER_FIRST_READ);
      for (;;) {
        const prefix = await readExactly(file, want, 0, (at) => new GgufError(path, `could not read byte ${at} of the header (the file shrank while being read?)`));
        try {
          return GgufFile.parse(path, file, prefix);
        } catch (err) {
          if (!(err instanceof NeedMoreBytes)) throw err;
          want = Math.min(file.size, Math.max(2 * want, err.end + HEADER_FIRST_READ));
        }
      }
    } catch (err) {
      void file.close().catch(() => {});
      if (err instanceof GgufError) throw err;
      // A ModelSource's own failure (an I/O error): still one line that names the file.
      throw new GgufError(path, `cannot read it (${(err as Error).message})`);
    }
  }

  private static parse(path: string, file: ModelFile, prefix: Uint8Array): GgufFile {
    const r: HeaderReader = new HeaderReader(prefix, file.size, path); // annotated: so r.fail() narrows types
    if (file.size < 24 || r.u32('magic') !== GGUF_MAGIC) {
      throw new GgufError(path, `not a GGUF file (it does not start with "GGUF" and a 24-byte header)`);
    }
    const version = r.u32('version');
    if (version === 1) r.fail('GGUF version 1 (2023) is not supported; convert the model again with a current llama.cpp');
    if ((version & 0xffff) === 0 && version !== 0) r.fail(`GGUF version reads as ${version}: a big-endian file, which this reader does not read`);
    if (version !== 2 && version !== 3) r.fail(`GGUF version ${version}; this reader reads versions 2 and 3`);
    const tensorCount = r.u64('tensor count');
    const kvCount = r.u64('metadata count');
    // The smallest entries: a key of 1 byte with a 1-byte value; a tensor name of 1 byte, no dims.
    if (kvCount * 14 > r.left) r.fail(`the header claims ${kvCount} metadata entries, more than the file's ${file.size} bytes can hold`);
    if (tensorCount * 25 > r.left) r.fail(`the header claims ${tensorCount} tensors, more than the file's ${file.size} bytes can hold`);

    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < kvCount; i++) {
      const at = r.pos;
      const key = r.string(`metadata key ${i}`, true);
      if (key.length === 0) r.fail(`metadata key ${i} at byte ${at} is empty`);
      if (metadata.has(key)) r.fail(`metadata key '${key}' appears twice (again at byte ${at})`);
      const type = r.valueType(`metadata '${key}'`);
      metadata.set(key, r.value(type, `metadata '${key}'`));
    }

    let alignment = GGUF_DEFAULT_ALIGNMENT;
    const a = metadata.get('general.alignment');
    if (a !== undefined) {
      if (a.type !== 'u32') r.fail(`general.alignment is ${describe(a)}; GGUF requires a u32`);
      if (a.value === 0 || (a.value & (a.value - 1)) !== 0) r.fail(`general.alignment is ${a.value}, not a power of two`);
      alignment = a.value;
    }

    const infos: Array<{ name: string; dims: number[]; typeId: number; rel: number }> = [];
    const names = new Set<string>();
    for (let i = 0; i < tensorCount; i++) {
      const at = r.pos;
      const name = r.string(`tensor ${i}'s name`, true);
      if (names.has(name)) r.fail(`tensor '${name}' appears twice (again at byte ${at})`);
      names.add(name);
      const nDims = r.u32(`tensor '${name}' dimension count`);
      if (nDims > GGUF_MAX_DIMS) r.fail(`tensor '${name}' has ${nDims} dimensions; ggml tensors have at most ${GGUF_MAX_DIMS}`);
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(r.u64(`tensor '${name}' dimension ${d}`));
      const typeId = r.u32(`tensor '${name}' type`);
      const rel = r.u64(`tensor '${name}' offset`);
      infos.push({ name, dims, typeId, rel });
    }
    const dataOffset = tensorCount > 0 ? Math.ceil(r.pos / alignment) * alignment : r.pos;
    if (tensorCount > 0 && dataOffset > file.size) r.fail(`truncated: the data section would start at byte ${dataOffset}, past the end (file size ${file.size})`);

    const tensors = new Map<string, GgufTensorInfo>();
    for (const { name, dims, typeId, rel } of infos) {
      let count = 1;
      for (const d of dims) count *= d;
      // A count this large is no real tensor, and products past 2^53 would lose exactness.
      if (!Number.isSafeInteger(count)) r.fail(`tensor '${name}' has dims [${dims.join(', ')}]: too many values`);
      if (rel % alignment !== 0) r.fail(`tensor '${name}' starts at data offset ${rel}, not a multiple of the alignment ${alignment}`);
      const offset = dataOffset + rel;
      if (offset > file.size) r.fail(`tensor '${name}' starts at byte ${offset}, past the end of the file (size ${file.size}); the file is truncated`);
      const type = ggmlTypeOf(typeId);
      let byteLength: number | null = null;
      if (type !== null) {
        const t = GGML_TYPES[type];
        const cols = dims[0] ?? 1;
        if (cols % t.blockValues !== 0) r.fail(`tensor '${name}' is ${type} with rows of ${cols} values, not whole blocks of ${t.blockValues}`);
        byteLength = count === 0 ? 0 : (count / t.blockValues) * t.blockBytes;
        if (offset + byteLength > file.size) {
          r.fail(`tensor '${name}' (${type}, dims [${dims.join(', ')}]) needs bytes ${offset}..${offset + byteLength}, past the end of the file (size ${file.size}); the file is truncated`);
        }
      }
      tensors.set(name, { name, typeId, type, dims, count, offset, byteLength });
    }

    // Tensors' bytes may not overlap: sort the sized ones by where they start.
    const sized = [...tensors.values()].filter((t) => t.byteLength !== null && t.byteLength > 0).sort((x, y) => x.offset - y.offset);
    for (let i = 1; i < sized.length; i++) {
      const prev = sized[i - 1]!;
      const cur = sized[i]!;
      if (cur.offset < prev.offset + prev.byteLength!) {
        r.fail(`tensors '${prev.name}' (bytes ${prev.offset}..${prev.offset + prev.byteLength!}) and '${cur.name}' (from byte ${cur.offset}) overlap`);
      }
    }
    return new GgufFile(path, version, alignment, dataOffset, metadata, tensors, file);
  }

  /** The tensor named `name`; throws naming the file when it has none. */
  tensor(name: string): GgufTensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) throw new GgufError(this.path, `has no tensor '${name}'`);
    return t;
  }

  /**
   * Reads bytes byteOffset .. byteOffset + length of tensor `name` into `into` (from its start;
   * length defaults to all of `into`); returns the filled part of `into`.
   */
  async read(name: string, into: Uint8Array, byteOffset = 0, length = into.byteLength): Promise<Uint8Array> {
    const t = this.tensor(name);
    if (t.byteLength === null) throw new GgufError(this.path, `tensor '${name}' is ${ggmlTypeName(t.typeId)}, which this project does not read`);
    if (!Number.isSafeInteger(byteOffset) || !Number.isSafeInteger(length) || byteOffset < 0 || length < 0 || byteOffset + length > t.byteLength) {
      throw new RangeError(`${this.path}: bytes ${byteOffset}..${byteOffset + length} of tensor '${name}' are outside its ${t.byteLength} bytes`);
    }
    if (length > into.byteLength) throw new RangeError(`${this.path}: reading ${length} bytes of tensor '${name}' into a buffer of ${into.byteLength}`);
    return readExactly(this.handle(), length, t.offset + byteOffset, (at) => new GgufError(this.path, `could not read tensor '${name}' at byte ${at} (the file shrank?)`), into);
  }

  /** All of tensor `name`'s bytes, in a new buffer. */
  readTensor(name: string): Promise<Uint8Array> {
    const t = this.tensor(name);
    return this.read(name, new Uint8Array(t.byteLength ?? 0));
  }

  close(): void {
    // Read-only: nothing is lost if a close fails, so it is not waited for.
    void this.file?.close().catch(() => {});
    this.file = null;
  }

  private handle(): ModelFile {
    if (this.file === null) throw new Error(`${this.path}: the GGUF file was closed`);
    return this.file;
  }

  // --- metadata ---

  /** The value at `key`, or undefined. */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(key);
  }

  private missing(key: string, wanted: string): never {
    throw new GgufError(this.path, `has no metadata '${key}' (${wanted}); is it a complete GGUF model of the right kind?`);
  }

  private wrongType(key: string, v: GgufValue, wanted: string): never {
    throw new GgufError(this.path, `metadata '${key}' is ${describe(v)}, expected ${wanted}`);
  }

  optionalString(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'string') this.wrongType(key, v, 'a string');
    return v.value;
  }

  getString(key: string): string {
    return this.optionalString(key) ?? this.missing(key, 'a string');
  }

  /** Any numeric type, as a number (a 64-bit integer must be a safe integer). */
  optionalNumber(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (!NUMBER_TYPES.includes(v.type)) this.wrongType(key, v, 'a number');
    if (typeof v.value === 'bigint') {
      if (v.value > BigInt(Number.MAX_SAFE_INTEGER) || v.value < -BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new GgufError(this.path, `metadata '${key}' is ${v.value}, too large to use as a number`);
      }
      return Number(v.value);
    }
    return v.value as number;
  }

  getNumber(key: string): number {
    return this.optionalNumber(key) ?? this.missing(key, 'a number');
  }

  /** A u32 exactly (what llama.cpp writes for counts and ids). */
  optionalU32(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'u32') this.wrongType(key, v, 'a u32');
    return v.value;
  }

  getU32(key: string): number {
    return this.optionalU32(key) ?? this.missing(key, 'a u32');
  }

  optionalBool(key: string): boolean | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'bool') this.wrongType(key, v, 'a bool');
    return v.value;
  }

  getBool(key: string): boolean {
    return this.optionalBool(key) ?? this.missing(key, 'a bool');
  }

  /** An array of any item type. */
  optionalArray(key: string): GgufArray | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'array') this.wrongType(key, v, 'an array');
    return v;
  }

  getArray(key: string): GgufArray {
    return this.optionalArray(key) ?? this.missing(key, 'an array');
  }

  optionalStrings(key: string): readonly string[] | undefined {
    const v = this.optionalArray(key);
    if (v === undefined) return undefined;
    if (v.itemType !== 'string') this.wrongType(key, v, 'an array of strings');
    return v.value;
  }

  getStrings(key: string): readonly string[] {
    return this.optionalStrings(key) ?? this.missing(key, 'an array of strings');
  }

  /** An array of any numeric item type (64-bit ones as safe integers). */
  optionalNumbers(key: string): ArrayLike<number> | undefined {
    const v = this.optionalArray(key);
    if (v === undefined) return undefined;
    if (v.itemType === 'u64' || v.itemType === 'i64') {
      const out = new Float64Array(v.value.length);
      for (let i = 0; i < out.length; i++) {
        const x = v.value[i]!;
        if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < -BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufError(this.path, `metadata '${key}'[${i}] is ${x}, too large to use as a number`);
        out[i] = Number(x);
      }
      return out;
    }
    if (!NUMBER_TYPES.includes(v.itemType)) this.wrongType(key, v, 'an array of numbers');
    return v.value as ArrayLike<number>;
  }

  getNumbers(key: string): ArrayLike<number> {
    return this.optionalNumbers(key) ?? this.missing(key, 'an array of numbers');
  }
}

/** Whether `path` names a GGUF file (by its name: a model folder is a Hugging Face checkpoint). */
export function isGgufPath(path: string): boolean {
  return /\.gguf$/i.test(path);
}
