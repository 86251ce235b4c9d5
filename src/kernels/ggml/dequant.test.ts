import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Rng } from '../../util/rng.ts';
import { freshSeed } from '../../util/testing.ts';
import { randomBlocks } from './blocks.testing.ts';
import { blockCodes, blockScales, dequantize } from './dequant.ref.ts';
import { GGML_TYPES, type GgmlType } from './types.ts';

/** golden/ggml_blocks.py's output: blocks and gguf-py's f32 values for them. */
interface Fixtures {
  c_cross_check: string | string[];
  cases: { type: GgmlType; source: string; count: number; blocks: number; bytes: string; values: string }[];
  sweeps: Record<string, { blocks: number; sha256: string }>;
}
const FIXTURES = JSON.parse(readFileSync(new URL('./fixtures/ggml_blocks.json', import.meta.url), 'utf8')) as Fixtures;

const ALL_TYPES = Object.keys(GGML_TYPES) as GgmlType[];
const BLOCK_TYPES = ALL_TYPES.filter((t) => GGML_TYPES[t].blockValues > 1);
/** Byte offsets of each block format's f16 fields (ggml-common.h), as golden/ggml_blocks.py has them. */
const HALF_FIELDS: Partial<Record<GgmlType, number[]>> = {
  Q4_0: [0], Q4_1: [0, 2], Q5_0: [0], Q5_1: [0, 2], Q8_0: [0],
  Q2_K: [80, 82], Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208],
};

function base64(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64'));
}

/** The first index where two f32 arrays differ in bits, or -1. */
function firstBitMismatch(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  if (x.length !== y.length) return Math.min(x.length, y.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

function hex(v: Float32Array, i: number): string {
  return `0x${new Uint32Array(v.buffer, v.byteOffset, v.length)[i]!.toString(16).padStart(8, '0')} (${v[i]})`;
}

/** golden/ggml_blocks.py's stream_bytes: SHA-256 of `${label}:${k}` for k = 0, 1, ... */
function streamBytes(label: string, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let k = 0, at = 0; at < n; k++, at += 32) {
    out.set(createHash('sha256').update(`${label}:${k}`).digest().subarray(0, Math.min(32, n - at)), at);
  }
  return out;
}

/** golden/ggml_blocks.py's fold_half on every f16 field: exponents above 20 become e - 11 (finite). */
function foldHalves(type: GgmlType, bytes: Uint8Array): void {
  const { blockBytes } = GGML_TYPES[type];
  for (let at = 0; at < bytes.length; at += blockBytes) {
    for (const off of HALF_FIELDS[type]!) {
      const h = bytes[at + off]! | (bytes[at + off + 1]! << 8);
      let e = (h >> 10) & 0x1f;
      if (e > 20) e -= 11;
      const folded = (h & 0x83ff) | (e << 10);
      bytes[at + off] = folded & 0xff;
      bytes[at + off + 1] = folded >> 8;
    }
  }
}

describe('ggml dequantization equals gguf-py bit for bit', () => {
  it('the fixtures hold random and real llama-quantize blocks of every type, and a sweep of each', () => {
    for (const type of ALL_TYPES) {
      const sources = FIXTURES.cases.filter((c) => c.type === type).map((c) => c.source);
      expect(sources.some((s) => s.includes('llama-quantize') || s.includes('GGUFWriter')), `${type}: no real blocks`).toBe(true);
      if (GGML_TYPES[type].blockValues > 1) expect(sources.some((s) => s.startsWith('random')), `${type}: no random blocks`).toBe(true);
      expect(FIXTURES.sweeps[type], `${type}: no sweep`).toBeDefined();
    }
  });

  for (const c of FIXTURES.cases) {
    it(`${c.type}, ${c.source}`, () => {
      const bytes = base64(c.bytes);
      const expected = new Float32Array(base64(c.values).buffer);
      expect(bytes.length).toBe((c.count / GGML_TYPES[c.type].blockValues) * GGML_TYPES[c.type].blockBytes);
      const actual = dequantize(c.type, bytes, c.count);
      const i = firstBitMismatch(actual, expected);
      const per = GGML_TYPES[c.type].blockValues;
      expect(i, i < 0 ? '' : `block ${Math.floor(i / per)}, weight ${i % per}: ours ${hex(actual, i)}, gguf-py ${hex(expected, i)}`).toBe(-1);
    });
  }

  for (const type of ALL_TYPES) {
    const sweep = FIXTURES.sweeps[type]!;
    it(`${type}: a sweep of ${sweep.blocks} ${GGML_TYPES[type].blockValues > 1 ? 'blocks (every f16 exponent 0..20, zeros and subnormals)' : 'values'}`, () => {
      let bytes: Uint8Array;
      if (type === 'F16' || type === 'BF16') {
        // Every 16-bit pattern, NaNs and infinities included.
        bytes = new Uint8Array(Uint16Array.from({ length: 65536 }, (_, h) => h).buffer);
      } else {
        bytes = streamBytes(`ggml-sweep/${type}`, sweep.blocks * GGML_TYPES[type].blockBytes);
        if (type !== 'F32') foldHalves(type, bytes);
      }
      const values = dequantize(type, bytes, sweep.blocks * GGML_TYPES[type].blockValues);
      const digest = createHash('sha256').update(new Uint8Array(values.buffer)).digest('hex');
      expect(digest, `${type}: the f32 output differs from gguf-py's (the explicit cases locate a mismatch)`).toBe(sweep.sha256);
    });
  }
});

describe('blockScales and blockCodes', () => {
  for (const type of BLOCK_TYPES) {
    it(`${type}: w = scale * q (+ bias) rebuilds dequantize's bits`, () => {
      const seed = freshSeed();
      const rng = new Rng(seed);
      const blocks = 8;
      // Raw random bytes with the f16 fields folded finite: every code and sub-scale pattern.
      const bytes = new Uint8Array(blocks * GGML_TYPES[type].blockBytes);
      for (let i = 0; i < bytes.length; i++) bytes[i] = rng.nextU32() & 0xff;
      foldHalves(type, bytes);
      const expected = dequantize(type, bytes, blocks * GGML_TYPES[type].blockValues);
      const rebuilt = new Float32Array(expected.length);
      for (let k = 0; k < blocks; k++) {
        const { subBlock, scale, bias } = blockScales(type, bytes, k);
        const q = blockCodes(type, bytes, k);
        expect(scale.length * subBlock).toBe(GGML_TYPES[type].blockValues);
        for (let i = 0; i < q.length; i++) {
          const s = Math.floor(i / subBlock);
          const p = Math.fround(scale[s]! * q[i]!);
          rebuilt[k * q.length + i] = bias ? Math.fround(p + bias[s]!) : p;
        }
      }
      const i = firstBitMismatch(rebuilt, expected);
      expect(i, i < 0 ? '' : `seed ${seed}, weight ${i}: rebuilt ${hex(rebuilt, i)}, dequantize ${hex(expected, i)}`).toBe(-1);
    });
  }

  it('codes span their documented ranges', () => {
    const ranges: Record<string, [number, number]> = {
      Q8_0: [-128, 127], Q4_0: [-8, 7], Q4_1: [0, 15], Q5_0: [-16, 15], Q5_1: [0, 31],
      Q2_K: [0, 3], Q3_K: [-4, 3], Q4_K: [0, 15], Q5_K: [0, 31], Q6_K: [-32, 31],
    };
    const seed = freshSeed();
    const rng = new Rng(seed);
    for (const type of BLOCK_TYPES) {
      // 8192 codes: Q8_0 misses one of its 256 values with probability e^-32.
      const blocks = 8192 / GGML_TYPES[type].blockValues;
      const bytes = randomBlocks(type, blocks, rng);
      let lo = Infinity;
      let hi = -Infinity;
      for (let k = 0; k < blocks; k++) {
        for (const q of blockCodes(type, bytes, k)) {
          lo = Math.min(lo, q);
          hi = Math.max(hi, q);
        }
      }
      expect([lo, hi], `seed ${seed}, ${type}`).toEqual(ranges[type]);
    }
  });
});

describe('randomBlocks', () => {
  for (const type of ALL_TYPES) {
    for (const scale of [0.02, 1.5]) {
      it(`${type}, scale ${scale}: valid blocks, finite weights, RMS near the scale, mean near zero`, () => {
        const seed = freshSeed();
        const rng = new Rng(seed);
        const { blockValues, blockBytes } = GGML_TYPES[type];
        const blocks = Math.ceil(65536 / blockValues);
        const bytes = randomBlocks(type, blocks, rng, scale);
        expect(bytes.length).toBe(blocks * blockBytes);
        const w = dequantize(type, bytes, blocks * blockValues);
        let sum = 0;
        let sq = 0;
        let firstBad = -1;
        for (let i = 0; i < w.length; i++) {
          if (!Number.isFinite(w[i]!) && firstBad < 0) firstBad = i;
          sum += w[i]!;
          sq += w[i]! * w[i]!;
        }
        expect(firstBad, `seed ${seed}: weight ${firstBad} is not finite`).toBe(-1);
        const rms = Math.sqrt(sq / w.length);
        expect(rms / scale, `seed ${seed}`).toBeGreaterThan(0.8);
        expect(rms / scale, `seed ${seed}`).toBeLessThan(1.25);
        expect(Math.abs(sum / w.length) / scale, `seed ${seed}`).toBeLessThan(0.05);
        if (blockValues > 1) {
          // Both signs of the scales, and of the mins where the format has them.
          let negScale = 0;
          let posScale = 0;
          let negBias = 0;
          let posBias = 0;
          for (let k = 0; k < blocks; k++) {
            const { scale: s, bias } = blockScales(type, bytes, k);
            for (const v of s) (v < 0 ? negScale++ : v > 0 && posScale++);
            for (const v of bias ?? []) (v < 0 ? negBias++ : v > 0 && posBias++);
          }
          expect(negScale > 0 && posScale > 0, `seed ${seed}: scales of one sign only`).toBe(true);
          if (type === 'Q4_1' || type === 'Q5_1' || type.endsWith('_K') && type !== 'Q3_K' && type !== 'Q6_K') {
            expect(negBias > 0 && posBias > 0, `seed ${seed}: mins of one sign only`).toBe(true);
          }
        }
      });
    }
  }

  it('one seed gives one matrix; a scale too large for f16 and a bad count throw', () => {
    const seed = freshSeed();
    expect(randomBlocks('Q4_K', 3, new Rng(seed))).toEqual(randomBlocks('Q4_K', 3, new Rng(seed)));
    expect(() => randomBlocks('Q8_0', 4, new Rng(seed), 1e9)).toThrow(/past 65504/);
    expect(() => randomBlocks('Q6_K', 1.5, new Rng(seed))).toThrow(/not a whole number/);
    expect(() => randomBlocks('Q6_K', 1, new Rng(seed), 0)).toThrow(/not a positive number/);
  });

  it('a 4096 x 4096 matrix of each format has exactly its whole blocks', () => {
    const rng = new Rng(freshSeed());
    for (const type of ['Q8_0', 'Q4_K', 'Q6_K', 'F16'] as GgmlType[]) {
      const bytes = randomBlocks(type, (4096 * 4096) / GGML_TYPES[type].blockValues, rng);
      expect(bytes.length, type).toBe((4096 * 4096 / GGML_TYPES[type].blockValues) * GGML_TYPES[type].blockBytes);
    }
  });
});

describe('dequantize refuses what is not whole blocks', () => {
  it('a count that is not a multiple of the block, bytes too short, a count that is no count', () => {
    const bytes = new Uint8Array(2 * GGML_TYPES.Q4_K.blockBytes);
    expect(() => dequantize('Q4_K', bytes, 300)).toThrow(/Q4_K: 300 weights are not whole blocks of 256/);
    expect(() => dequantize('Q4_K', bytes, 768)).toThrow(/Q4_K: 768 weights need 432 bytes, got 288/);
    expect(() => dequantize('Q8_0', new Uint8Array(33), 32)).toThrow(/need 34 bytes, got 33/);
    expect(() => dequantize('F16', new Uint8Array(3), 2)).toThrow(/need 4 bytes, got 3/);
    expect(() => dequantize('Q4_0', bytes, -32)).toThrow(/not a whole number/);
    // Longer bytes are fine: the count is taken from the start.
    expect(dequantize('Q4_K', bytes, 256)).toHaveLength(256);
    expect(() => blockScales('Q6_K', new Uint8Array(209), 0)).toThrow(/block 0 is past the 209 bytes/);
    expect(() => blockCodes('F32', new Uint8Array(8), 0)).toThrow(/F32 is not a block format/);
  });
});
