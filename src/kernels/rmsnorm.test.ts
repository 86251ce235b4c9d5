import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, readF32, uploadF32 } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxRelError, randomNormal, poison } from '../util/testing.ts';
import { rmsNorm } from './rmsnorm.ts';
import { rmsNormRef } from './rmsnorm.ref.ts';

async function check(tokens: number, dim: number, eps: number, xScale: number) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const x = randomNormal(rng, tokens * dim, xScale);
  const weight = Float32Array.from(randomNormal(rng, dim, 0.2), (w) => 1 + w);
  const xb = uploadF32(gpu, x);
  const wb = uploadF32(gpu, weight);
  const yb = createStorageBuffer(gpu, tokens * dim * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  rmsNorm(enc, { x: xb, weight: wb, y: yb, tokens, dim, eps });
  enc.submit();
  const y = await readF32(gpu, yb, tokens * dim);
  for (const b of [xb, wb, yb]) b.destroy();
  const err = maxRelError(y, rmsNormRef(x, weight, tokens, dim, eps));
  expect(err, `seed ${seed}, tokens ${tokens}, dim ${dim}`).toBeLessThan(1e-5);
}

describe('rmsNorm', () => {
  it('matches the reference at the tiny shape (hidden 64)', () => check(5, 64, 1e-5, 1));
  it('matches the reference at the real shape (hidden 4096)', () => check(3, 4096, 1e-5, 1));
  it('matches the reference with a dim that is not a multiple of the workgroup', () => check(7, 100, 1e-6, 1));
  it('lets eps dominate rows of tiny values', () => check(4, 77, 1e-5, 1e-4));
});
