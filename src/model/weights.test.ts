/**
 * firstNonFinite, the load-time scan of every weight byte, against the plain
 * definition (decode, then Number.isFinite) on fresh random words.
 */
import { describe, expect, it } from 'vitest';
import type { WeightDType } from '../gpu/buffers.ts';
import { decodeToF32 } from '../util/half.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';
import { firstNonFinite } from './weights.ts';

function reference(bytes: Uint8Array, dtype: WeightDType): number {
  return decodeToF32(bytes, dtype).findIndex((v) => !Number.isFinite(v));
}

/** Largest finite values and their neighbours in the exponent field, per dtype (bits of one element). */
const EDGES: Record<WeightDType, { finite: number[]; nonFinite: number[] }> = {
  f16: { finite: [0x7bff, 0xfbff, 0x0001, 0x8000, 0x0400], nonFinite: [0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xffff] },
  bf16: { finite: [0x7f7f, 0xff7f, 0x0001, 0x8000], nonFinite: [0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xffff] },
  f32: { finite: [0x7f7fffff, 0xff7fffff, 0x00000001, 0x80000000], nonFinite: [0x7f800000, 0xff800000, 0x7fc00000, 0xffffffff] },
};

describe('firstNonFinite', () => {
  const seed = freshSeed();
  for (const dtype of ['f16', 'bf16', 'f32'] as const) {
    it(`${dtype}: finds the first Inf or NaN exactly where decoding does, at every length (seed ${seed})`, () => {
      const rng = new Rng(seed);
      const size = dtype === 'f32' ? 4 : 2;
      const { finite, nonFinite } = EDGES[dtype];
      for (let trial = 0; trial < 300; trial++) {
        // 16-bit lengths that are odd, or not a multiple of the 4-word unroll, included.
        const count = rng.int(1, 200);
        const bytes = new Uint8Array(count * size);
        const view = new DataView(bytes.buffer);
        const put = (i: number, bits: number) => (size === 2 ? view.setUint16(i * 2, bits, true) : view.setUint32(i * 4, bits >>> 0, true));
        for (let i = 0; i < count; i++) {
          // Random finite values: a random word (replaced if it happens to be Inf or NaN), or an edge case.
          let bits = rng.int(0, size === 2 ? 0x10000 : 0x100000000);
          if (rng.next() < 0.2) bits = finite[rng.int(0, finite.length)]!;
          put(i, bits);
          const [value] = decodeToF32(bytes.subarray(i * size, (i + 1) * size), dtype);
          if (!Number.isFinite(value!)) put(i, finite[0]!);
        }
        const bad = trial % 3 === 0 ? 0 : rng.int(1, 3); // a third of the arrays are all finite
        for (let k = 0; k < bad; k++) put(rng.int(0, count), nonFinite[rng.int(0, nonFinite.length)]!);
        expect(firstNonFinite(bytes, dtype), `seed ${seed}, trial ${trial}, ${count} elements`).toBe(reference(bytes, dtype));
      }
    });
  }
});
