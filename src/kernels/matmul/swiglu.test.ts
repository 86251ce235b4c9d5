import { describe, expect, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, type WeightDType } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import { runnable, type KernelPlan } from '../plan.ts';
import { matmulSwiGLU } from './index.ts';
import { swigluRef } from './swiglu.ref.ts';
import { randomMatrix } from './fixtures.ts';

const TOLERANCE: Record<WeightDType, number> = { f32: 1e-5, f16: 1e-3, bf16: 1e-3 };
/** Every matvec strategy this device can run (lavapipe: all three; subgroups of 8). */
const VARIANTS = runnable((await getGpu()).profile, 'matvec');

/** Every prefill (gemm) strategy this device can run. */
const GEMMS = runnable((await getGpu()).profile, 'gemm');

async function check(opts: {
  intermediate: number; hidden: number; tokens: number; dtype: WeightDType; maxPartBytes?: number;
  matvec?: KernelPlan['matvec']; gemm?: KernelPlan['gemm']; splits?: number;
}) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { intermediate, hidden, tokens, dtype } = opts;
  const matvec = opts.matvec ?? 'rows';
  const gemm = opts.gemm ?? 'regtile';
  const gate = randomMatrix(gpu, rng, intermediate, hidden, dtype, opts.maxPartBytes);
  const up = randomMatrix(gpu, rng, intermediate, hidden, dtype, opts.maxPartBytes);
  // Scale x so that gate sums spread over silu's curved region and both tails.
  const x = randomNormal(rng, tokens * hidden, 1 / Math.sqrt(hidden));
  const xb = uploadF32(gpu, x);
  const yb = createStorageBuffer(gpu, tokens * intermediate * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  matmulSwiGLU(enc, { x: xb, gate: gate.matrix, up: up.matrix, y: yb, tokens, plan: { matvec, gemm }, splits: opts.splits });
  enc.submit();
  const y = await readF32(gpu, yb, tokens * intermediate);
  xb.destroy();
  yb.destroy();
  destroyMatrix(gate.matrix);
  destroyMatrix(up.matrix);
  const expected = swigluRef(x, gate.values, up.values, tokens, intermediate, hidden);
  const label = `seed ${seed}, matvec=${matvec}, gemm=${gemm}, ${intermediate}x${hidden} ${dtype}, tokens ${tokens}, parts ${gate.matrix.parts.length}`;
  expect(maxRelError(y, expected), label).toBeLessThan(TOLERANCE[dtype]);
  return gate.matrix.parts.length;
}

// Dtypes and token counts spread over the cases (each pipeline compiles for seconds on lavapipe).
describe.each(VARIANTS)('matmulSwiGLU, matvec=%s (decode: 1 to 8 tokens)', (matvec) => {
  it('one token (f16) and 6 tokens (bf16), odd sizes', async () => {
    await check({ intermediate: 37, hidden: 64, tokens: 1, dtype: 'f16', matvec });
    await check({ intermediate: 1001, hidden: 136, tokens: 6, dtype: 'bf16', matvec });
  });

  it('split matrices', async () => {
    expect(await check({ intermediate: 4099, hidden: 64, tokens: 1, dtype: 'f16', maxPartBytes: 1000 * 128, matvec })).toBe(5);
    await check({ intermediate: 4099, hidden: 64, tokens: 3, dtype: 'bf16', maxPartBytes: 1000 * 128, matvec });
  });

  it('real hidden size 4096: decode, and 8 tokens', async () => {
    await check({ intermediate: 2000, hidden: 4096, tokens: 1, dtype: 'f16', matvec });
    await check({ intermediate: 300, hidden: 4096, tokens: 8, dtype: 'bf16', matvec });
  });
});

describe.each(GEMMS)('matmulSwiGLU, gemm=%s (prefill: more than 8 tokens)', (gemm) => {
  it('f32 and f16, odd sizes, 9 and 17 tokens', async () => {
    await check({ intermediate: 1000, hidden: 192, tokens: 17, dtype: 'f32', gemm });
    await check({ intermediate: 37, hidden: 64, tokens: 9, dtype: 'f16', gemm });
  });

  it('bf16, 301 tokens', async () => {
    await check({ intermediate: 203, hidden: 136, tokens: 301, dtype: 'bf16', gemm });
  });

  it('split matrices; the 1b hidden size 2048', async () => {
    await check({ intermediate: 4099, hidden: 64, tokens: 40, dtype: 'f16', maxPartBytes: 1000 * 128, gemm });
    await check({ intermediate: 300, hidden: 2048, tokens: 130, dtype: 'bf16', gemm });
  });
});

describe('matmulSwiGLU, gemm=tiled with its K split', () => {
  it('K ranges of uneven length; a split matrix', async () => {
    await check({ intermediate: 203, hidden: 520, tokens: 45, dtype: 'bf16', gemm: 'tiled', splits: 3 });
    await check({ intermediate: 4099, hidden: 64, tokens: 19, dtype: 'f16', maxPartBytes: 1000 * 128, gemm: 'tiled', splits: 2 });
  });
});

describe('matmulSwiGLU, prefill (more than 8 tokens) under the default gemm', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    it(`17 tokens, ${dtype}; one token with the rows strategy`, async () => {
      await check({ intermediate: 1000, hidden: 192, tokens: 17, dtype });
      await check({ intermediate: 37, hidden: 64, tokens: 1, dtype });
    });
  }

  it('tiny model shape (hidden 64, intermediate 192), 130 tokens; split matrices', async () => {
    await check({ intermediate: 192, hidden: 64, tokens: 130, dtype: 'f16' });
    await check({ intermediate: 4099, hidden: 64, tokens: 9, dtype: 'f16', maxPartBytes: 1000 * 128 });
  });

  it('rejects a hidden size the kernel cannot read', async () => {
    const gpu = await getGpu();
    const rng = new Rng(freshSeed());
    const gate = randomMatrix(gpu, rng, 4, 66, 'f16');
    const buf = createStorageBuffer(gpu, 1024);
    const enc = new Encoder(gpu);
    expect(() => matmulSwiGLU(enc, { x: buf, gate: gate.matrix, up: gate.matrix, y: buf, tokens: 1, plan: { matvec: 'rows' } })).toThrow(/multiple of 8/);
    enc.submit();
    buf.destroy();
    destroyMatrix(gate.matrix);
  });
});
