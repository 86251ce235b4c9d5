import { describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, type WeightDType } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import { runnable, type KernelPlan } from '../plan.ts';
import { gemmSplits, matmul } from './index.ts';
import { matmulRef } from './matmul.ref.ts';
import { randomMatrix } from './fixtures.ts';

const TOLERANCE: Record<WeightDType, number> = { f32: 1e-5, f16: 1e-3, bf16: 1e-3 };
/** Every matvec strategy this device can run (lavapipe: all three; subgroups of 8). */
const VARIANTS = runnable((await getGpu()).profile, 'matvec');

/** Every prefill (gemm) strategy this device can run. */
const GEMMS = runnable((await getGpu()).profile, 'gemm');

type Case = {
  rows: number; cols: number; tokens: number; dtype: WeightDType; accumulate?: boolean; maxPartBytes?: number;
  matvec?: KernelPlan['matvec']; gemm?: KernelPlan['gemm']; splits?: number;
};

async function check(opts: Case) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { rows, cols, tokens, dtype } = opts;
  const matvec = opts.matvec ?? 'rows';
  const gemm = opts.gemm ?? 'regtile';
  const { matrix, values } = randomMatrix(gpu, rng, rows, cols, dtype, opts.maxPartBytes);
  const x = randomNormal(rng, tokens * cols);
  const xb = uploadF32(gpu, x);
  const y0 = opts.accumulate ? randomNormal(rng, tokens * rows, 10) : null;
  const yb = createStorageBuffer(gpu, tokens * rows * 4);
  if (y0) uploadInto(gpu, yb, y0);
  else poison(gpu, yb);
  const enc = new Encoder(gpu);
  matmul(enc, { x: xb, w: matrix, y: yb, tokens, accumulate: opts.accumulate, plan: { matvec, gemm }, splits: opts.splits });
  enc.submit();
  const y = await readF32(gpu, yb, tokens * rows);
  xb.destroy();
  yb.destroy();
  destroyMatrix(matrix);
  const expected = matmulRef(x, values, tokens, rows, cols);
  if (y0) for (let i = 0; i < expected.length; i++) expected[i] = expected[i]! + y0[i]!;
  const err = maxRelError(y, expected);
  const label = `seed ${seed}, matvec=${matvec}, gemm=${gemm}, ${rows}x${cols} ${dtype}, tokens ${tokens}${opts.accumulate ? ', accumulate' : ''}${opts.splits ? `, splits ${opts.splits}` : ''}, parts ${matrix.parts.length}`;
  expect(err, label).toBeLessThan(TOLERANCE[dtype]);
  return matrix;
}

function uploadInto(gpu: Gpu, buffer: GPUBuffer, data: Float32Array) {
  gpu.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
}

// Each new pipeline costs seconds to compile on lavapipe, so dtypes and token counts are
// spread over the cases rather than crossed: every variant sees f32, f16 and bf16 for one
// token, and 2..8 tokens (one pipeline, TOKENS = 8) with 16-bit weights.
describe.each(VARIANTS)('matmul, matvec=%s (decode: 1 to 8 tokens)', (matvec) => {
  it('one token, f32 / f16 / bf16, rows and columns not multiples of the tiles', async () => {
    await check({ rows: 1001, cols: 1032, tokens: 1, dtype: 'f16', matvec });
    await check({ rows: 37, cols: 64, tokens: 1, dtype: 'bf16', matvec, accumulate: true });
    await check({ rows: 203, cols: 72, tokens: 1, dtype: 'f32', matvec });
  });

  it('2 to 8 tokens', async () => {
    await check({ rows: 37, cols: 200, tokens: 3, dtype: 'bf16', matvec });
    await check({ rows: 203, cols: 72, tokens: 8, dtype: 'bf16', matvec, accumulate: true });
  });

  it('lm_head: a matrix split into parts (the last one short), each writing its own output columns', async () => {
    // ~1000 rows per part of 64 16-bit columns: 5 parts.
    const m = await check({ rows: 4099, cols: 64, tokens: 1, dtype: 'f16', maxPartBytes: 1000 * 128, matvec });
    expect(m.parts.length).toBe(5);
    await check({ rows: 4099, cols: 64, tokens: 5, dtype: 'bf16', maxPartBytes: 1000 * 128, matvec });
  });

  it("down_proj's real shape 4096x14336 (the long inner loop) into the residual", async () => {
    await check({ rows: 4096, cols: 14336, tokens: 1, dtype: 'f16', accumulate: true, matvec });
  });
});

describe.each(GEMMS)('matmul, gemm=%s (prefill: more than 8 tokens)', (gemm) => {
  it('f32 / f16 / bf16, token and row counts not multiples of the tiles', async () => {
    await check({ rows: 1000, cols: 64, tokens: 17, dtype: 'f32', gemm });
    await check({ rows: 203, cols: 72, tokens: 9, dtype: 'f16', gemm, accumulate: true });
    await check({ rows: 37, cols: 200, tokens: 33, dtype: 'bf16', gemm });
  });

  it('1 to 300 tokens: every count from 9 to 40, then 130 and 301', async () => {
    for (let tokens = 9; tokens <= 40; tokens += 7) await check({ rows: 101, cols: 136, tokens, dtype: 'bf16', gemm });
    await check({ rows: 70, cols: 64, tokens: 130, dtype: 'f16', gemm, accumulate: true });
    await check({ rows: 301, cols: 128, tokens: 301, dtype: 'bf16', gemm });
  });

  it('split matrices (the last part short), each part writing its own output columns', async () => {
    const m = await check({ rows: 4099, cols: 64, tokens: 19, dtype: 'bf16', maxPartBytes: 1000 * 128, gemm });
    expect(m.parts.length).toBe(5);
    await check({ rows: 4099, cols: 64, tokens: 130, dtype: 'f16', maxPartBytes: 1000 * 128, gemm, accumulate: true });
  });

  it('real shape 2048x5632 (down_proj of the 1b model), 23 tokens, into the residual', async () => {
    await check({ rows: 2048, cols: 5632, tokens: 23, dtype: 'bf16', gemm, accumulate: true });
  });
});

describe('matmul, gemm=tiled with its K split (what a GPU runs when the row tiles are few)', () => {
  it('splits K by the matrix alone: enough row tiles, or enough KT steps per range, and never on a CPU', () => {
    expect(gemmSplits('hardware', 64, 128)).toBe(5); // 7B q_proj: 64 row tiles of 64 -> 5 x 64 >= 264
    expect(gemmSplits('hardware', 16, 128)).toBe(16); // k_proj: capped at 16 ranges
    expect(gemmSplits('hardware', 16, 9)).toBe(2); // at least 4 steps per range
    expect(gemmSplits('hardware', 300, 128)).toBe(1);
    expect(gemmSplits('software', 4, 128)).toBe(1);
  });

  it('K ranges of uneven length, a split matrix, into the residual', async () => {
    await check({ rows: 203, cols: 520, tokens: 45, dtype: 'bf16', gemm: 'tiled', splits: 3 });
    await check({ rows: 4099, cols: 64, tokens: 19, dtype: 'f16', maxPartBytes: 1000 * 128, gemm: 'tiled', splits: 2, accumulate: true });
    await check({ rows: 70, cols: 1032, tokens: 130, dtype: 'f32', gemm: 'tiled', splits: 5, accumulate: true });
  });
});

describe('matmul, prefill and odd widths: the same kernels under every matvec plan', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    it(`widths that are not a multiple of 8 (word-at-a-time kernel), ${dtype}`, async () => {
      await check({ rows: 37, cols: 66, tokens: 1, dtype });
      await check({ rows: 70, cols: 66, tokens: 130, dtype });
    });
  }

  it('prefill with 130 tokens and 4099 rows, and split matrices', async () => {
    await check({ rows: 4099, cols: 64, tokens: 130, dtype: 'f16' });
    await check({ rows: 4099, cols: 64, tokens: 17, dtype: 'bf16', maxPartBytes: 1000 * 128 });
    await check({ rows: 300, cols: 66, tokens: 3, dtype: 'f32', maxPartBytes: 77 * 66 * 4, accumulate: true });
  });

  it('accumulates into a random y (fused residual add)', async () => {
    await check({ rows: 1000, cols: 256, tokens: 17, dtype: 'bf16', accumulate: true });
    await check({ rows: 37, cols: 66, tokens: 3, dtype: 'f32', accumulate: true });
  });

  it('real shapes: 14336x4096 decode, 4096x4096 prefill of 9 tokens', async () => {
    await check({ rows: 14336, cols: 4096, tokens: 1, dtype: 'bf16' });
    await check({ rows: 4096, cols: 4096, tokens: 9, dtype: 'f16', accumulate: true });
  });
});
