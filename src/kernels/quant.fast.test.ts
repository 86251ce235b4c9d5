import { describe, expect, it } from 'vitest';
import { Rng } from '../util/rng.ts';
import { bf16ToF32, decodeToF32, f16ToF32 } from '../util/half.ts';
import { freshSeed, randomNormal } from '../util/testing.ts';
import { QUANT_FORMATS, QUANT_GROUP } from '../gpu/buffers.ts';
import { quantizeRows, quantizeRowsPlain } from './quant.ref.ts';

/**
 * Rows that reach every corner of the rounding: all-zero groups, one weight among zeros, exact
 * halves of the step (both signs), ties of largest magnitude (w and -w), subnormal f32 weights
 * next to large ones, scales at f16's subnormal end and near its top, and plain normal rows.
 */
function hardRows(rng: Rng, rows: number, cols: number): Float32Array {
  const v = randomNormal(rng, rows * cols, 0.02);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols / QUANT_GROUP; g++) {
      const at = r * cols + g * QUANT_GROUP;
      const group = v.subarray(at, at + QUANT_GROUP);
      switch ((r * 7 + g) % 9) {
        case 0:
          group.fill(0);
          break;
        case 1:
          group.fill(0);
          group[rng.int(0, QUANT_GROUP)] = rng.normal();
          break;
        case 2: {
          // Multiples of half a step: d = 1 (q8: max 127), so every weight is a tie or an integer.
          for (let j = 0; j < QUANT_GROUP; j++) group[j] = (rng.int(0, 255) - 127) / 2;
          group[0] = 127;
          break;
        }
        case 3: {
          // q4: d = m / -8 = 0.5 with m = -4; weights k / 4 land on exact halves of the step.
          for (let j = 0; j < QUANT_GROUP; j++) group[j] = (rng.int(0, 33) - 16) / 4;
          group[5] = -4;
          break;
        }
        case 4:
          group[3] = 0.5;
          group[9] = -0.5; // |w| ties: the first one is the group's largest
          break;
        case 5:
          for (let j = 0; j < QUANT_GROUP; j += 2) group[j] = rng.normal() * 1e-40; // f32 subnormals
          group[1] = 3;
          break;
        case 6:
          for (let j = 0; j < QUANT_GROUP; j++) group[j] = rng.normal() * 1e-6; // scale in f16's subnormals (or 0)
          break;
        case 7:
          for (let j = 0; j < QUANT_GROUP; j++) group[j] = rng.int(-400000, 400001); // q4 scale near the top of f16
          group[0] = 5e5;
          break;
        default:
          break;
      }
    }
  }
  return v;
}

describe('quantizeRows (fast) against quantizeRowsPlain (the definition)', () => {
  for (const format of QUANT_FORMATS) {
    it(`${format}: the same bytes on random and hard rows`, () => {
      const seed = freshSeed();
      const rng = new Rng(seed);
      for (const [rows, cols] of [
        [37, 288],
        [5, 4096],
        [1, 32],
      ] as const) {
        const values = hardRows(rng, rows, cols);
        const fast = quantizeRows(values, rows, cols, format);
        const plain = quantizeRowsPlain(values, rows, cols, format);
        const codeDiff = fast.codes.findIndex((c, i) => c !== plain.codes[i]);
        const scaleDiff = fast.scales.findIndex((s, i) => s !== plain.scales[i]);
        expect(codeDiff, `seed ${seed}, ${format} [${rows}, ${cols}]: first differing code byte`).toBe(-1);
        expect(scaleDiff, `seed ${seed}, ${format} [${rows}, ${cols}]: first differing scale`).toBe(-1);
        expect(fast.codes.length).toBe(plain.codes.length);
      }
    });

    it(`${format}: refuses a weight too large for an f16 scale, as the definition does`, () => {
      const values = new Float32Array(64).fill(0.25);
      values[40] = format === 'q8' ? 127 * 70000 : 8 * 70000;
      expect(() => quantizeRows(values, 1, 64, format, 'w')).toThrow(/w: row 0 has a weight of .* too large for an f16/);
      expect(() => quantizeRowsPlain(values, 1, 64, format, 'w')).toThrow(/w: row 0 has a weight of .* too large for an f16/);
    });
  }
});

describe('decodeToF32 (typed-array views) against the per-element definitions', () => {
  it('every f16 and bf16 bit pattern, at an even and an odd byte offset', () => {
    const all = new Uint16Array(0x10000);
    for (let h = 0; h < 0x10000; h++) all[h] = h;
    const bytes = new Uint8Array(all.buffer);
    const odd = new Uint8Array(bytes.byteLength + 1).subarray(1);
    odd.set(bytes);
    for (const src of [bytes, odd]) {
      for (const [dtype, one] of [
        ['f16', f16ToF32],
        ['bf16', bf16ToF32],
      ] as const) {
        const got = decodeToF32(src, dtype);
        let bad = -1;
        for (let h = 0; h < 0x10000 && bad < 0; h++) if (!Object.is(got[h], Math.fround(one(h)))) bad = h;
        expect(bad, `${dtype}, byte offset ${src.byteOffset % 2}: first bit pattern widened differently`).toBe(-1);
      }
    }
  });
});
