import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, type WeightDType } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxRelError, randomNormal, poison } from '../util/testing.ts';
import { matmulSwiGLU } from './swiglu.ts';
import { swigluRef } from './swiglu.ref.ts';
import { randomMatrix } from './matmul.fixtures.ts';

const TOLERANCE: Record<WeightDType, number> = { f32: 1e-5, f16: 1e-3, bf16: 1e-3 };

async function check(opts: { intermediate: number; hidden: number; tokens: number; dtype: WeightDType; maxPartBytes?: number }) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { intermediate, hidden, tokens, dtype } = opts;
  const gate = randomMatrix(gpu, rng, intermediate, hidden, dtype, opts.maxPartBytes);
  const up = randomMatrix(gpu, rng, intermediate, hidden, dtype, opts.maxPartBytes);
  // Scale x so that gate sums spread over silu's curved region and both tails.
  const x = randomNormal(rng, tokens * hidden, 1 / Math.sqrt(hidden));
  const xb = uploadF32(gpu, x);
  const yb = createStorageBuffer(gpu, tokens * intermediate * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  matmulSwiGLU(enc, { x: xb, gate: gate.matrix, up: up.matrix, y: yb, tokens });
  enc.submit();
  const y = await readF32(gpu, yb, tokens * intermediate);
  xb.destroy();
  yb.destroy();
  destroyMatrix(gate.matrix);
  destroyMatrix(up.matrix);
  const expected = swigluRef(x, gate.values, up.values, tokens, intermediate, hidden);
  const label = `seed ${seed}, ${intermediate}x${hidden} ${dtype}, tokens ${tokens}, parts ${gate.matrix.parts.length}`;
  expect(maxRelError(y, expected), label).toBeLessThan(TOLERANCE[dtype]);
  return gate.matrix.parts.length;
}

describe('matmulSwiGLU', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    it(`decode and prefill, ${dtype}, odd sizes`, async () => {
      await check({ intermediate: 37, hidden: 64, tokens: 1, dtype });
      await check({ intermediate: 1000, hidden: 192, tokens: 17, dtype });
    });
  }

  it('tiny model shape (hidden 64, intermediate 192), 130 tokens', async () => {
    await check({ intermediate: 192, hidden: 64, tokens: 130, dtype: 'f16' });
  });

  it('split matrices', async () => {
    expect(await check({ intermediate: 4099, hidden: 64, tokens: 1, dtype: 'bf16', maxPartBytes: 1000 * 128 })).toBe(5);
    await check({ intermediate: 4099, hidden: 64, tokens: 3, dtype: 'f16', maxPartBytes: 1000 * 128 });
  });

  it('real hidden size 4096: decode, and a 5-token prefill', async () => {
    await check({ intermediate: 2000, hidden: 4096, tokens: 1, dtype: 'f16' });
    await check({ intermediate: 300, hidden: 4096, tokens: 5, dtype: 'bf16' });
  });

  it('rejects a hidden size the kernel cannot read', async () => {
    const gpu = await getGpu();
    const rng = new Rng(freshSeed());
    const gate = randomMatrix(gpu, rng, 4, 66, 'f16');
    const buf = createStorageBuffer(gpu, 1024);
    const enc = new Encoder(gpu);
    expect(() => matmulSwiGLU(enc, { x: buf, gate: gate.matrix, up: gate.matrix, y: buf, tokens: 1 })).toThrow(/multiple of 8/);
    enc.submit();
    buf.destroy();
    destroyMatrix(gate.matrix);
  });
});
