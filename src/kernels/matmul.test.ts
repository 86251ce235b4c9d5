import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, type WeightDType } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import type { Gpu } from '../gpu/device.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxRelError, randomNormal, poison } from '../util/testing.ts';
import { matmul } from './matmul.ts';
import { matmulRef } from './matmul.ref.ts';
import { randomMatrix } from './matmul.fixtures.ts';

const TOLERANCE: Record<WeightDType, number> = { f32: 1e-5, f16: 1e-3, bf16: 1e-3 };

async function check(opts: { rows: number; cols: number; tokens: number; dtype: WeightDType; accumulate?: boolean; maxPartBytes?: number }) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { rows, cols, tokens, dtype } = opts;
  const { matrix, values } = randomMatrix(gpu, rng, rows, cols, dtype, opts.maxPartBytes);
  const x = randomNormal(rng, tokens * cols);
  const xb = uploadF32(gpu, x);
  const y0 = opts.accumulate ? randomNormal(rng, tokens * rows, 10) : null;
  const yb = createStorageBuffer(gpu, tokens * rows * 4);
  if (y0) uploadInto(gpu, yb, y0);
  else poison(gpu, yb);
  const enc = new Encoder(gpu);
  matmul(enc, { x: xb, w: matrix, y: yb, tokens, accumulate: opts.accumulate });
  enc.submit();
  const y = await readF32(gpu, yb, tokens * rows);
  xb.destroy();
  yb.destroy();
  destroyMatrix(matrix);
  const expected = matmulRef(x, values, tokens, rows, cols);
  if (y0) for (let i = 0; i < expected.length; i++) expected[i] = expected[i]! + y0[i]!;
  const err = maxRelError(y, expected);
  const label = `seed ${seed}, ${rows}x${cols} ${dtype}, tokens ${tokens}${opts.accumulate ? ', accumulate' : ''}, parts ${matrix.parts.length}`;
  expect(err, label).toBeLessThan(TOLERANCE[dtype]);
  return matrix;
}

function uploadInto(gpu: Gpu, buffer: GPUBuffer, data: Float32Array) {
  gpu.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
}

describe('matmul', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    it(`decode (one token), ${dtype}, rows not a multiple of the workgroup`, async () => {
      await check({ rows: 1000, cols: 4096, tokens: 1, dtype });
      await check({ rows: 37, cols: 64, tokens: 1, dtype });
    });
    it(`prefill, ${dtype}, token counts not a multiple of the tile`, async () => {
      await check({ rows: 37, cols: 192, tokens: 3, dtype });
      await check({ rows: 1000, cols: 64, tokens: 17, dtype });
    });
    it(`widths that are not a multiple of 8 (word-at-a-time kernel), ${dtype}`, async () => {
      await check({ rows: 37, cols: 66, tokens: 1, dtype });
      await check({ rows: 70, cols: 66, tokens: 130, dtype });
    });
  }

  it('prefill with 130 tokens and 4099 rows', async () => {
    await check({ rows: 4099, cols: 64, tokens: 130, dtype: 'f16' });
  });

  it('accumulates into a random y (fused residual add)', async () => {
    await check({ rows: 1000, cols: 256, tokens: 1, dtype: 'f16', accumulate: true });
    await check({ rows: 1000, cols: 256, tokens: 17, dtype: 'bf16', accumulate: true });
    await check({ rows: 37, cols: 66, tokens: 3, dtype: 'f32', accumulate: true });
  });

  it('splits a matrix into parts and writes each part its own output columns', async () => {
    // ~1000 rows per part of 64 f16 columns: 5 parts, the last one short.
    const m = await check({ rows: 4099, cols: 64, tokens: 1, dtype: 'f16', maxPartBytes: 1000 * 128 });
    expect(m.parts.length).toBe(5);
    await check({ rows: 4099, cols: 64, tokens: 17, dtype: 'bf16', maxPartBytes: 1000 * 128 });
    await check({ rows: 300, cols: 66, tokens: 3, dtype: 'f32', maxPartBytes: 77 * 66 * 4, accumulate: true });
  });

  it('real shapes: 4096x4096 and 14336x4096 decode, 4096x4096 prefill of 5 tokens', async () => {
    await check({ rows: 4096, cols: 4096, tokens: 1, dtype: 'f16' });
    await check({ rows: 14336, cols: 4096, tokens: 1, dtype: 'bf16' });
    await check({ rows: 4096, cols: 4096, tokens: 5, dtype: 'f16', accumulate: true });
  });

  it("down_proj's real shape: 4096x14336 (the long inner loop), decode and a 3-token prefill, into the residual", async () => {
    await check({ rows: 4096, cols: 14336, tokens: 1, dtype: 'bf16', accumulate: true });
    await check({ rows: 4096, cols: 14336, tokens: 3, dtype: 'f16', accumulate: true });
  });
});
