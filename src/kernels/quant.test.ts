import { describe, expect, it } from 'vitest';
import { Rng } from '../util/rng.ts';
import { f16ToF32 } from '../util/half.ts';
import { freshSeed, randomNormal } from '../util/testing.ts';
import { QUANT_FORMATS, QUANT_GROUP, quantBytes, quantLayout } from '../gpu/buffers.ts';
import { dequantizeRows, partBytes, quantizeRows } from './quant.ref.ts';

describe('quantized formats (CPU reference)', () => {
  it('bytes per weight: q8 8.5 bits, q4 4.5 bits, rows padded to 16 bytes', () => {
    expect(quantBytes('q8', 4096, 4096) / (4096 * 4096)).toBe(34 / 32);
    expect(quantBytes('q4', 14336, 4096) / (14336 * 4096)).toBe(18 / 32);
    // 64 columns: 2 scales, padded to 8 (16 bytes).
    expect(quantLayout('q4', 64)).toEqual({ codeRowBytes: 32, scalesPerRow: 8, scaleRowBytes: 16, rowBytes: 48 });
    expect(() => quantLayout('q8', 66)).toThrow(/multiple of 32/);
  });

  for (const format of QUANT_FORMATS) {
    it(`${format}: round-to-nearest per group, error at most half a step, the largest weight exact`, () => {
      const seed = freshSeed();
      const rng = new Rng(seed);
      const rows = 7;
      const cols = 96;
      const values = randomNormal(rng, rows * cols, 0.02);
      const qr = quantizeRows(values, rows, cols, format);
      const back = dequantizeRows(qr, rows, cols, format);
      const L = quantLayout(format, cols);
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < cols / QUANT_GROUP; g++) {
          const d = Math.abs(f16ToF32(qr.scales[r * L.scalesPerRow + g]!));
          let amax = 0;
          for (let j = 0; j < QUANT_GROUP; j++) {
            const i = r * cols + g * QUANT_GROUP + j;
            amax = Math.max(amax, Math.abs(values[i]!));
            // q8: half a step (plus f32 rounding). q4: the far side clamps at +7 d, where a weight can reach
            // 8 * amax / 8 = 8 d' with d' the unrounded scale; d is d' rounded to f16 (within 2^-11 relative), so the
            // error is at most 8 d' - 7 d <= d (1 + 8 * 2^-11 / (1 - 2^-11)).
            const bound = format === 'q4' ? d * (1 + 8.01 * 2 ** -11) : d * 0.5005;
            expect(Math.abs(back[i]! - values[i]!), `seed ${seed}, ${format}, row ${r}, column ${g * QUANT_GROUP + j}`).toBeLessThanOrEqual(bound);
          }
          // The scale is the f16 nearest to amax / 127 (q8) or amax / 8 (q4): within 2^-11 relative.
          const ideal = format === 'q8' ? amax / 127 : amax / 8;
          expect(Math.abs(d - ideal), `seed ${seed}`).toBeLessThanOrEqual(ideal * 2 ** -11);
        }
      }
      // Padding scales are zero; a part's bytes are its rows' codes then their scales.
      expect(qr.scales[L.scalesPerRow - 1]).toBe(0);
      const part = partBytes(qr, 2, 3, format, cols);
      expect(part.byteLength).toBe(3 * L.rowBytes);
      expect([...part.subarray(0, L.codeRowBytes)]).toEqual([...qr.codes.subarray(2 * L.codeRowBytes, 3 * L.codeRowBytes)]);
    });
  }

  it('q4 packs weight b and b + 4 of each word into byte b; an all-zero group stays zero', () => {
    const values = new Float32Array(32);
    for (let j = 0; j < 8; j++) values[j] = -8 + j; // codes 0..7 with d = 1
    const qr = quantizeRows(values, 1, 32, 'q4');
    expect(f16ToF32(qr.scales[0]!)).toBe(1);
    expect([...qr.codes.subarray(0, 4)]).toEqual([0x40, 0x51, 0x62, 0x73]);
    expect([...dequantizeRows(qr, 1, 32, 'q4').subarray(0, 8)]).toEqual([-8, -7, -6, -5, -4, -3, -2, -1]);
    const zero = quantizeRows(new Float32Array(32), 1, 32, 'q8');
    expect([...dequantizeRows(zero, 1, 32, 'q8')].every((v) => v === 0)).toBe(true);
  });

  it('refuses a weight too large for an f16 scale, naming the tensor', () => {
    const values = new Float32Array(32).fill(1e7);
    expect(() => quantizeRows(values, 1, 32, 'q8', 'lm_head.weight')).toThrow(/lm_head.weight: row 0/);
  });
});
