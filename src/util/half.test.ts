import { describe, expect, it } from 'vitest';
import { bf16ToF32, decodeToF32, encodeFromF32, f16ToF32, f32ToBf16, f32ToF16 } from './half.ts';
import { Rng } from './rng.ts';
import { freshSeed } from './testing.ts';

describe('16-bit floats', () => {
  it('f16 round-trips every finite half exactly', () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = f16ToF32(h);
      if (!Number.isFinite(v)) continue;
      const back = f32ToF16(v);
      // +0/-0 keep their sign bit; everything else must return the same bits.
      expect(back, `half 0x${h.toString(16)}`).toBe(h);
    }
  });

  it('f32 -> f16 rounds to the nearest half', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    for (let i = 0; i < 20000; i++) {
      const v = rng.normal() * 2 ** rng.int(-20, 12);
      const h = f32ToF16(v);
      const back = f16ToF32(h);
      // The nearest half is within half an ulp: check neighbours are not closer.
      const up = f16ToF32(h + 1);
      const down = f16ToF32(h - 1);
      const err = Math.abs(back - Math.fround(v));
      if (Number.isFinite(up)) expect(err, `seed ${seed} v ${v}`).toBeLessThanOrEqual(Math.abs(up - Math.fround(v)));
      if (Number.isFinite(down) && (h & 0x7fff) !== 0) expect(err, `seed ${seed} v ${v}`).toBeLessThanOrEqual(Math.abs(down - Math.fround(v)));
    }
  });

  it('bf16 widens exactly and rounds to nearest even', () => {
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xc000)).toBe(-2);
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80); // tie -> even
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie -> even (up)
    const seed = freshSeed();
    const rng = new Rng(seed);
    const vals = new Float32Array(1000).map(() => rng.normal() * 100);
    const bf = decodeToF32(encodeFromF32(vals, 'bf16'), 'bf16');
    vals.forEach((v, i) => expect(Math.abs(bf[i]! - v), `seed ${seed}`).toBeLessThanOrEqual(Math.abs(v) * 2 ** -8));
  });
});
