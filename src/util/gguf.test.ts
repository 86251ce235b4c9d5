import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { GgufError, GgufFile, type GgufArray, type GgufValue } from './gguf.ts';
import { ggufTensorBytes, gv, writeGguf, type GgufTensorToWrite } from './gguf_writer.ts';
import { GGML_TYPES, type GgmlType } from '../kernels/ggml/types.ts';
import { Rng } from './rng.ts';
import { freshSeed } from './testing.ts';

const dir = mkdtempSync(join(tmpdir(), 'gguf-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
const tmp = (name = 'f') => join(dir, `${name}-${fileNo++}.gguf`);

const VOCAB_DIR = fileURLToPath(new URL('../../../shared/peer/llama-vocab/', import.meta.url));
const haveVocab = existsSync(join(VOCAB_DIR, 'ggml-vocab-llama-spm.gguf'));
if (!haveVocab) console.log(`gguf.test: ${VOCAB_DIR} is absent; skipping the tests on llama.cpp's vocabulary files`);

function randomBytes(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.nextU32() & 0xff;
  return out;
}

function randomString(rng: Rng, maxLen: number): string {
  const alphabet = ['a', 'Z', '0', ' ', '▁', 'é', '中', '🦙', '\n', '\u0000', '"', '<|x|>'];
  let s = '';
  const n = rng.int(0, maxLen + 1);
  for (let i = 0; i < n; i++) s += alphabet[rng.int(0, alphabet.length)];
  return s;
}

/** Metadata of every value type, scalars and arrays, with random contents. */
function everyType(rng: Rng): Array<[string, GgufValue]> {
  const ints = (n: number, lo: number, hi: number) => Array.from({ length: n }, () => rng.int(lo, hi + 1));
  const f32 = () => Math.fround(rng.normal() * 1000);
  const nested: GgufArray = gv.arrays([gv.strings(['a', 'b']), gv.numbers('i16', [-3, 4]), gv.arrays([gv.bools([true])]), gv.arrays([])]);
  return [
    ['t.u8', gv.u8(rng.int(0, 256))],
    ['t.i8', gv.i8(rng.int(-128, 128))],
    ['t.u16', gv.u16(rng.int(0, 65536))],
    ['t.i16', gv.i16(rng.int(-32768, 32768))],
    ['t.u32', gv.u32(0xffffffff - rng.int(0, 1000))],
    ['t.i32', gv.i32(-0x80000000 + rng.int(0, 1000))],
    ['t.f32', gv.f32(f32())],
    ['t.f64', gv.f64(rng.normal() * 1e300)],
    ['t.bool.true', gv.bool(true)],
    ['t.bool.false', gv.bool(false)],
    ['t.string', gv.string(randomString(rng, 40))],
    ['t.string.empty', gv.string('')],
    ['t.u64', gv.u64((1n << 64n) - BigInt(rng.int(1, 1000)))],
    ['t.i64', gv.i64(-(1n << 63n) + BigInt(rng.int(0, 1000)))],
    ['a.u8', gv.numbers('u8', ints(rng.int(0, 50), 0, 255))],
    ['a.i8', gv.numbers('i8', ints(7, -128, 127))],
    ['a.u16', gv.numbers('u16', ints(9, 0, 65535))],
    ['a.i16', gv.numbers('i16', ints(3, -32768, 32767))],
    ['a.u32', gv.numbers('u32', ints(11, 0, 0xffffffff))],
    ['a.i32', gv.numbers('i32', ints(13, -0x80000000, 0x7fffffff))],
    ['a.f32', gv.numbers('f32', Array.from({ length: 17 }, f32))],
    ['a.f64', gv.numbers('f64', Array.from({ length: 5 }, () => rng.normal()))],
    ['a.bool', gv.bools(Array.from({ length: 6 }, () => rng.next() < 0.5))],
    ['a.string', gv.strings(Array.from({ length: rng.int(1, 100) }, () => randomString(rng, 12)))],
    ['a.string.empty', gv.strings([])],
    ['a.u64', gv.bigints('u64', [0n, (1n << 64n) - 1n, BigInt(rng.int(0, 1e9))])],
    ['a.i64', gv.bigints('i64', [-(1n << 63n), (1n << 63n) - 1n])],
    ['a.nested', nested],
  ];
}

/** A value as plain data (typed arrays as lists) for equality. */
function plain(v: GgufValue): unknown {
  if (v.type !== 'array') return v;
  const items = Array.from(v.value as ArrayLike<unknown>);
  return { type: v.type, itemType: v.itemType, value: v.itemType === 'array' ? (items as GgufValue[]).map(plain) : items };
}

const TENSOR_TYPES: GgmlType[] = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K'];

function randomTensors(rng: Rng, n: number): GgufTensorToWrite[] {
  const out: GgufTensorToWrite[] = [];
  for (let i = 0; i < n; i++) {
    const type = TENSOR_TYPES[rng.int(0, TENSOR_TYPES.length)]!;
    const block = GGML_TYPES[type].blockValues;
    const dims = [block * rng.int(1, 3), ...Array.from({ length: rng.int(0, 3) }, () => rng.int(1, 4))];
    const data = randomBytes(rng, ggufTensorBytes(type, dims));
    out.push({ name: `blk.${i}.${type.toLowerCase()}.weight`, type, dims, data: i % 2 === 0 ? data : () => data });
  }
  return out;
}

async function tensorData(t: GgufTensorToWrite): Promise<Uint8Array> {
  return typeof t.data === 'function' ? t.data() : t.data;
}

/** Byte position of the first occurrence of `needle` in `hay`. */
function indexOf(hay: Uint8Array, needle: string): number {
  const n = new TextEncoder().encode(needle);
  outer: for (let i = 0; i + n.length <= hay.length; i++) {
    for (let j = 0; j < n.length; j++) if (hay[i + j] !== n[j]) continue outer;
    return i;
  }
  throw new Error(`'${needle}' not in the file`);
}

/** Writes a file, lets `patch` change its bytes, and returns the path. */
async function patched(contents: Parameters<typeof writeGguf>[1], patch: (bytes: Uint8Array, view: DataView) => void): Promise<string> {
  const path = tmp('patched');
  await writeGguf(path, contents);
  const bytes = new Uint8Array(readFileSync(path));
  patch(bytes, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  writeFileSync(path, bytes);
  return path;
}

async function expectGgufError(path: string, pattern: RegExp): Promise<void> {
  let caught: unknown;
  try {
    (await GgufFile.open(path)).close();
  } catch (err) {
    caught = err;
  }
  expect(caught, `opening ${path} should fail`).toBeInstanceOf(GgufError);
  const message = (caught as Error).message;
  expect(message.startsWith(path)).toBe(true);
  expect(message).not.toContain('\n');
  expect(message).toMatch(pattern);
}

describe('GGUF round trip', () => {
  for (const alignment of [32, 64, 1, 4096]) {
    it(`metadata of every type and tensors of every read type, alignment ${alignment}`, async () => {
      const seed = freshSeed();
      const rng = new Rng(seed);
      const metadata = everyType(rng);
      const tensors = randomTensors(rng, 8);
      const path = tmp();
      await writeGguf(path, { metadata, tensors, alignment });
      const f = await GgufFile.open(path);
      try {
        const msg = `seed ${seed}`;
        expect(f.version, msg).toBe(3);
        expect(f.alignment, msg).toBe(alignment);
        expect(f.dataOffset % alignment, msg).toBe(0);
        expect(f.totalBytes, msg).toBe(readFileSync(path).byteLength);
        const expected = alignment === 32 ? metadata : [...metadata, ['general.alignment', gv.u32(alignment)] as [string, GgufValue]];
        expect([...f.metadata.keys()], msg).toEqual(expected.map(([k]) => k));
        for (const [k, v] of expected) expect(plain(f.metadata.get(k)!), `${msg}: ${k}`).toEqual(plain(v));
        expect([...f.tensors.keys()], msg).toEqual(tensors.map((t) => t.name));
        for (const t of tensors) {
          const info = f.tensor(t.name);
          expect(info.type, msg).toBe(t.type);
          expect(info.typeId, msg).toBe(GGML_TYPES[t.type].id);
          expect(info.dims, msg).toEqual(t.dims);
          expect(info.count, msg).toBe(t.dims.reduce((a, b) => a * b, 1));
          expect(info.byteLength, msg).toBe((await tensorData(t)).byteLength);
          expect(info.offset % alignment, msg).toBe(0);
          expect(await f.readTensor(t.name), `${msg}: ${t.name}`).toEqual((await tensorData(t)));
          // A slice at a random place, into a larger buffer.
          const data = (await tensorData(t));
          const a = rng.int(0, data.byteLength);
          const b = rng.int(a, data.byteLength + 1);
          const into = new Uint8Array(b - a + 5);
          const got = await f.read(t.name, into, a, b - a);
          expect(got.byteLength, msg).toBe(b - a);
          expect(got, msg).toEqual(data.subarray(a, b));
        }
      } finally {
        f.close();
      }
    });
  }

  it('reads version 2 and a file without tensors', async () => {
    const path = tmp();
    await writeGguf(path, { metadata: [['general.name', gv.string('x')]], version: 2 });
    const f = await GgufFile.open(path);
    expect(f.version).toBe(2);
    expect(f.tensors.size).toBe(0);
    expect(f.getString('general.name')).toBe('x');
    f.close();
  });

  it('typed getters give values, and throw naming the file and the key when absent or of another type', async () => {
    const path = tmp();
    await writeGguf(path, {
      metadata: [
        ['s', gv.string('hi')],
        ['n', gv.u32(7)],
        ['big', gv.u64(1n << 60n)],
        ['i', gv.i32(-2)],
        ['b', gv.bool(true)],
        ['list', gv.strings(['x', 'y'])],
        ['nums', gv.numbers('f32', [0.5, -1])],
        ['ids', gv.bigints('u64', [3n, 4n])],
      ],
    });
    const f = await GgufFile.open(path);
    expect(f.getString('s')).toBe('hi');
    expect(f.getNumber('n')).toBe(7);
    expect(f.getU32('n')).toBe(7);
    expect(f.getNumber('i')).toBe(-2);
    expect(f.getBool('b')).toBe(true);
    expect(f.getStrings('list')).toEqual(['x', 'y']);
    expect(Array.from(f.getNumbers('nums'))).toEqual([0.5, -1]);
    expect(Array.from(f.getNumbers('ids'))).toEqual([3, 4]);
    expect(f.optionalString('absent')).toBeUndefined();
    expect(f.optionalNumber('absent')).toBeUndefined();
    expect(f.getArray('list').itemType).toBe('string');
    const cases: Array<[() => unknown, RegExp]> = [
      [() => f.getString('absent'), /no metadata 'absent'/],
      [() => f.getString('n'), /'n' is a u32, expected a string/],
      [() => f.getU32('i'), /'i' is a i32, expected a u32/],
      [() => f.getNumber('s'), /'s' is a string, expected a number/],
      [() => f.getNumber('big'), /'big' is 1152921504606846976, too large/],
      [() => f.getBool('n'), /expected a bool/],
      [() => f.getStrings('nums'), /'nums' is an array of f32, expected an array of strings/],
      [() => f.getNumbers('list'), /expected an array of numbers/],
      [() => f.tensor('w'), /has no tensor 'w'/],
    ];
    for (const [fn, re] of cases) {
      expect(fn).toThrow(GgufError);
      expect(fn).toThrow(re);
      expect(fn).toThrow(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    }
    f.close();
  });

  it('the writer refuses values that do not fit their type, and data of the wrong size', async () => {
    await expect(writeGguf(tmp(), { metadata: [['x', gv.u8(256)]] })).rejects.toThrow(/256 is not a u8/);
    await expect(writeGguf(tmp(), { metadata: [['x', gv.i32(1.5)]] })).rejects.toThrow(/not a i32/);
    await expect(writeGguf(tmp(), { metadata: [['x', gv.u64(-1n)]] })).rejects.toThrow(/does not fit a u64/);
    await expect(writeGguf(tmp(), { metadata: [['x', gv.u8(1)], ['x', gv.u8(2)]] })).rejects.toThrow(/'x' given twice/);
    await expect(writeGguf(tmp(), { metadata: [], tensors: [{ name: 'w', type: 'Q8_0', dims: [33], data: new Uint8Array(34) }] })).rejects.toThrow(/not whole Q8_0 blocks/);
    await expect(writeGguf(tmp(), { metadata: [], tensors: [{ name: 'w', type: 'F16', dims: [4, 2], data: new Uint8Array(15) }] })).rejects.toThrow(/needs 16 bytes, its data has 15/);
  });
});

describe('GGUF malformed files', () => {
  const base = () => ({
    metadata: [['aa', gv.u32(1)], ['ab', gv.string('x')]] as Array<[string, GgufValue]>,
    tensors: [
      { name: 'wa', type: 'F32' as GgmlType, dims: [8, 2], data: new Uint8Array(64) },
      { name: 'wb', type: 'F32' as GgmlType, dims: [8], data: new Uint8Array(32) },
    ],
  });

  it('refuses a file that is not GGUF, version 1, a big-endian file, a future version', async () => {
    const other = tmp();
    writeFileSync(other, 'PK\u0003\u0004 this is a zip, or so it says........');
    await expectGgufError(other, /not a GGUF file/);
    await expectGgufError(await patched(base(), (_, v) => v.setUint32(4, 1, true)), /version 1/);
    await expectGgufError(await patched(base(), (_, v) => v.setUint32(4, 3, false)), /big-endian/);
    await expectGgufError(await patched(base(), (_, v) => v.setUint32(4, 4, true)), /version 4; this reader reads versions 2 and 3/);
    const empty = tmp();
    writeFileSync(empty, '');
    await expectGgufError(empty, /not a GGUF file/);
    await expectGgufError(dir, /directory/);
    await expectGgufError(join(dir, 'absent.gguf'), /cannot open it/);
  });

  it('refuses duplicate keys and tensor names, unknown value types, overlapping and misaligned tensors', async () => {
    await expectGgufError(await patched(base(), (b) => (b[indexOf(b, 'ab') + 1] = 'a'.charCodeAt(0))), /metadata key 'aa' appears twice/);
    await expectGgufError(await patched(base(), (b) => (b[indexOf(b, 'wb') + 1] = 'a'.charCodeAt(0))), /tensor 'wa' appears twice/);
    // The u32 type id follows the 2-byte key.
    await expectGgufError(await patched(base(), (b, v) => v.setUint32(indexOf(b, 'aa') + 2, 13, true)), /value type 13/);
    // wb's offset: after the name, n_dims, one dim and its type.
    const wbOffset = (b: Uint8Array) => indexOf(b, 'wb') + 2 + 4 + 8 + 4;
    await expectGgufError(await patched(base(), (b, v) => v.setBigUint64(wbOffset(b), 32n, true)), /'wa' .* and 'wb' .* overlap/);
    await expectGgufError(await patched(base(), (b, v) => v.setBigUint64(wbOffset(b), 65n, true)), /not a multiple of the alignment 32/);
    await expectGgufError(await patched(base(), (b, v) => v.setBigUint64(wbOffset(b), 1n << 40n, true)), /past the end of the file/);
    await expectGgufError(await patched(base(), (b, v) => v.setBigUint64(wbOffset(b), 1n << 62n, true)), /beyond any file's size/);
    // wa's n_dims.
    await expectGgufError(await patched(base(), (b, v) => v.setUint32(indexOf(b, 'wa') + 2, 5, true)), /5 dimensions/);
    await expectGgufError(await patched(base(), (_, v) => v.setBigUint64(16, 1n << 40n, true)), /claims 1099511627776 metadata entries/);
    await expectGgufError(await patched(base(), (_, v) => v.setBigUint64(8, 1n << 40n, true)), /claims 1099511627776 tensors/);
    await expectGgufError(
      await patched({ metadata: [['general.alignment', gv.u32(32)]] }, (b, v) => v.setUint32(indexOf(b, 'general.alignment') + 17 + 4, 48, true)),
      /alignment is 48, not a power of two/,
    );
    await expectGgufError(await patched({ metadata: [['general.alignment', gv.u32(32)]] }, (b, v) => v.setUint32(indexOf(b, 'general.alignment') + 17, 5, true)), /alignment is a i32/);
    // An array claiming more items than the file holds: the count follows the array's item type.
    await expectGgufError(
      await patched({ metadata: [['arr', gv.strings(['a'])]] }, (b, v) => v.setBigUint64(indexOf(b, 'arr') + 3 + 4 + 4, 1n << 50n, true)),
      /claims 1125899906842624 items/,
    );
  });

  it('keeps a tensor of a type this project does not read, with its id and no byte length', async () => {
    const path = await patched(base(), (b, v) => v.setUint32(indexOf(b, 'wb') + 2 + 4 + 8, 16, true));
    const f = await GgufFile.open(path);
    const t = f.tensor('wb');
    expect(t.typeId).toBe(16);
    expect(t.type).toBeNull();
    expect(t.byteLength).toBeNull();
    expect(f.tensor('wa').byteLength).toBe(64);
    await expect(f.read('wb', new Uint8Array(4))).rejects.toThrow(/'wb' is IQ2_XXS, which this project does not read/);
    f.close();
  });

  it('fuzzed: truncated and byte-flipped files open or fail with one Error naming the file', async () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const started = Date.now();
    let opened = 0;
    let refused = 0;
    for (let round = 0; round < 300; round++) {
      const source = tmp('fuzz-src');
      await writeGguf(source, { metadata: everyType(rng), tensors: randomTensors(rng, rng.int(0, 5)), alignment: [1, 8, 32, 64][rng.int(0, 4)]! });
      const bytes = new Uint8Array(readFileSync(source));
      rmSync(source);
      const path = tmp('fuzz');
      const damaged = bytes.slice();
      const flips = rng.int(0, 8);
      for (let k = 0; k < flips; k++) damaged[rng.int(0, damaged.length)]! ^= 1 << rng.int(0, 8);
      // Flip the high bytes of counts and lengths sometimes: the header fields most worth attacking.
      if (rng.next() < 0.3) damaged[rng.int(8, 24)] = 0xff;
      writeFileSync(path, damaged);
      if (rng.next() < 0.6) truncateSync(path, rng.int(0, damaged.length));
      const t0 = Date.now();
      try {
        const f = await GgufFile.open(path);
        for (const t of f.tensors.values()) if (t.byteLength !== null && t.byteLength > 0) await f.read(t.name, new Uint8Array(t.byteLength));
        f.close();
        opened++;
      } catch (err) {
        refused++;
        const ok = err instanceof GgufError && err.message.startsWith(`${path}: `) && !err.message.includes('\n');
        expect(ok, `seed ${seed}, round ${round}: ${String(err)}`).toBe(true);
      }
      expect(Date.now() - t0, `seed ${seed}, round ${round}: took too long`).toBeLessThan(2000);
      rmSync(path);
    }
    expect(opened + refused).toBe(300);
    expect(refused, `seed ${seed}: damage should be caught sometimes`).toBeGreaterThan(0);
    expect(Date.now() - started, `seed ${seed}`).toBeLessThan(30_000);
  });
});

describe.skipIf(!haveVocab)("llama.cpp's vocabulary-only GGUF files", () => {
  for (const name of ['ggml-vocab-llama-spm.gguf', 'ggml-vocab-phi-3.gguf']) {
    it(`parses ${name}`, async () => {
      const t0 = performance.now();
      const f = await GgufFile.open(join(VOCAB_DIR, name));
      const ms = performance.now() - t0;
      console.log(`gguf.test: ${name} parsed in ${ms.toFixed(1)} ms (${f.metadata.size} keys, ${f.getStrings('tokenizer.ggml.tokens').length} tokens)`);
      try {
        expect(f.version).toBe(3);
        expect(f.tensors.size).toBe(0);
        expect(f.getString('tokenizer.ggml.model')).toBe('llama');
        const tokens = f.getStrings('tokenizer.ggml.tokens');
        expect(tokens.length).toBeGreaterThanOrEqual(32000);
        expect(tokens.slice(0, 3)).toEqual(['<unk>', '<s>', '</s>']);
        expect(tokens[3 + 0x41]).toBe('<0x41>');
        expect(f.getArray('tokenizer.ggml.scores').itemType).toBe('f32');
        expect(f.getNumbers('tokenizer.ggml.scores').length).toBe(tokens.length);
        expect(f.getArray('tokenizer.ggml.token_type').itemType).toBe('i32');
        expect(f.getNumber('tokenizer.ggml.bos_token_id')).toBe(1);
        expect(f.getString('general.architecture')).toMatch(/^(llama|phi3)$/);
      } finally {
        f.close();
      }
    });
  }

  it('writes llama-spm back equal, metadata for metadata', async () => {
    const f = await GgufFile.open(join(VOCAB_DIR, 'ggml-vocab-llama-spm.gguf'));
    const path = tmp('copy');
    await writeGguf(path, { metadata: [...f.metadata.entries()], alignment: f.alignment });
    const g = await GgufFile.open(path);
    expect([...g.metadata.keys()].sort()).toEqual([...f.metadata.keys()].sort());
    for (const [k, v] of f.metadata) expect(plain(g.metadata.get(k)!), k).toEqual(plain(v));
    // The same bytes, but for the padding to the alignment at the end, which gguf-py leaves out without tensors.
    const ours = readFileSync(path);
    const theirs = readFileSync(join(VOCAB_DIR, 'ggml-vocab-llama-spm.gguf'));
    expect(ours.byteLength - theirs.byteLength).toBeLessThan(f.alignment);
    expect(ours.subarray(0, theirs.byteLength).equals(theirs)).toBe(true);
    expect(ours.subarray(theirs.byteLength).every((b) => b === 0)).toBe(true);
    f.close();
    g.close();
  });
});
