import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, readF32, uploadF32 } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, poison, randomNormal } from '../util/testing.ts';
import { logSumExp } from './logsumexp.ts';
import { logSumExpRef } from './logsumexp.ref.ts';

async function run(logits: Float32Array, n: number, rows: number): Promise<Float32Array> {
  const gpu = await getGpu();
  const lb = uploadF32(gpu, logits);
  const out = createStorageBuffer(gpu, rows * 4);
  poison(gpu, out);
  const enc = new Encoder(gpu);
  logSumExp(enc, { logits: lb, n, rows, out });
  enc.submit();
  const result = await readF32(gpu, out, rows);
  lb.destroy();
  out.destroy();
  return result;
}

/**
 * Tolerance: f32 exponentials and a sum of n terms in f32 (each invocation's strided slice, then
 * a tree): relative error of the sum ~1e-6, so about 1e-6 absolute in its log, plus the rounding
 * of the result itself (|out| * 2^-24). 2e-5 + 1e-6 |out| leaves a margin; a wrong shift or a
 * dropped slice is off by orders of magnitude more.
 */
const tolerance = (x: number) => 2e-5 + 1e-6 * Math.abs(x);

describe('logSumExp', () => {
  it('matches the float64 reference on vocabulary-sized rows (n = 32002) and odd sizes', async () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    for (const [n, rows, scale, offset] of [[32002, 3, 4, 0], [1000, 2, 1, 80], [7, 4, 30, -50], [257, 1, 0.01, 3]] as const) {
      const logits = randomNormal(rng, n * rows, scale).map((x) => x + offset);
      const out = await run(logits, n, rows);
      for (let r = 0; r < rows; r++) {
        const want = logSumExpRef(logits, r * n, n);
        expect(Math.abs(out[r]! - want), `seed ${seed}, n ${n}, row ${r}: ${out[r]} vs ${want}`).toBeLessThan(tolerance(want));
      }
    }
  });

  it('is exact in its shift: one dominant logit, equal logits, large magnitudes', async () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const n = 4099;
    const rows = 3;
    const logits = new Float32Array(n * rows);
    for (let j = 0; j < n; j++) logits[j] = -1e4 + rng.normal(); // row 0: one token far ahead
    logits[rng.int(0, n)] = 50;
    logits.fill(12.5, n, 2 * n); // row 1: all equal -> 12.5 + log(n)
    for (let j = 0; j < n; j++) logits[2 * n + j] = 3e4 + rng.normal(); // row 2: would overflow unshifted
    const out = await run(logits, n, rows);
    for (let r = 0; r < rows; r++) {
      const want = logSumExpRef(logits, r * n, n);
      expect(Math.abs(out[r]! - want), `seed ${seed}, row ${r}: ${out[r]} vs ${want}`).toBeLessThan(tolerance(want));
    }
    expect(Math.abs(out[1]! - (12.5 + Math.log(n)))).toBeLessThan(tolerance(out[1]!));
  });
});
