import { describe, expect, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, matrixRowBytes, readF32, uploadF32, QUANT_FORMATS, type QuantFormat } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, poison, randomNormal } from '../../util/testing.ts';
import { runnable, type KernelPlan } from '../plan.ts';
import { matmul, matmulSwiGLU } from './index.ts';
import { randomQuantMatrix } from './fixtures.ts';
import { checkQuantMatmul, checkQuantSwiGLU } from './qcheck.testing.ts';

/**
 * The prefill (gemm) strategies over q8/q4 weights (gemm_read_quant.wgsl) against the
 * plain-TypeScript product over the same weights dequantized plainly: qcheck.testing.ts.
 */
const GEMMS = runnable((await getGpu()).profile, 'gemm');
const checkMatmul = checkQuantMatmul;
const checkSwiGLU = checkQuantSwiGLU;

/**
 * The exactness rule: a token's outputs are the same bits whether it runs among `tokens`
 * tokens or in a shorter chunk of its first `few` (different token tiles, tiled's few/many).
 */
async function checkChunkIndependence(gemm: KernelPlan['gemm'], format: QuantFormat, swiglu: boolean) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const rows = 45;
  const cols = 224;
  const [many, few] = [41, 11];
  const gate = randomQuantMatrix(gpu, rng, rows, cols, format);
  const up = randomQuantMatrix(gpu, rng, rows, cols, format);
  const x = randomNormal(rng, many * cols, 1 / Math.sqrt(cols));
  const xb = uploadF32(gpu, x);
  const run = async (tokens: number) => {
    const yb = createStorageBuffer(gpu, tokens * rows * 4);
    poison(gpu, yb);
    const enc = new Encoder(gpu);
    const plan = { matvec: 'rows' as const, gemm };
    if (swiglu) matmulSwiGLU(enc, { x: xb, gate: gate.matrix, up: up.matrix, y: yb, tokens, plan });
    else matmul(enc, { x: xb, w: gate.matrix, y: yb, tokens, plan });
    enc.submit();
    const y = await readF32(gpu, yb, tokens * rows);
    yb.destroy();
    return y;
  };
  const all = await run(many);
  const first = await run(few);
  xb.destroy();
  destroyMatrix(gate.matrix);
  destroyMatrix(up.matrix);
  expect(first, `seed ${seed}, gemm=${gemm} ${format} ${swiglu ? 'swiglu' : 'matmul'}: ${few} tokens alone vs among ${many}`).toEqual(all.subarray(0, few * rows));
}

// Each (strategy, format, op, tile) is a pipeline compiled for seconds on lavapipe: shapes are
// spread over the cases rather than crossed; every case has token and row counts that are not
// multiples of any strategy's tiles, and more than 8 tokens (prefill) unless batched.
describe.each(GEMMS)('quantized prefill, gemm=%s', (gemm) => {
  for (const format of QUANT_FORMATS) {
    it(`${format}: matmul into a poisoned y and into the residual (accumulate), matrices split into parts`, async () => {
      await checkMatmul({ rows: 203, cols: 160, tokens: 19, format, gemm });
      await checkMatmul({ rows: 70, cols: 256, tokens: 130, format, gemm, accumulate: true });
      // 96 columns: 3 groups, scale rows padded to 8; ~100 rows per part, the last one short.
      expect(await checkMatmul({ rows: 411, cols: 96, tokens: 17, format, gemm, maxPartBytes: 100 * matrixRowBytes(format, 96), accumulate: true })).toBe(5);
    });

    it(`${format}: SwiGLU (gate and up), split matrices`, async () => {
      await checkSwiGLU({ rows: 37, cols: 192, tokens: 45, format, gemm });
      await checkSwiGLU({ rows: 301, cols: 64, tokens: 9, format, gemm, maxPartBytes: 100 * matrixRowBytes(format, 64) });
    });

    it(`${format}: a token's outputs do not depend on the other tokens of its chunk; a batched prefill step of 3 tokens`, async () => {
      await checkChunkIndependence(gemm, format, false);
      await checkChunkIndependence(gemm, format, true);
      await checkMatmul({ rows: 99, cols: 128, tokens: 3, format, gemm, batch: 'prefill', accumulate: true });
      await checkSwiGLU({ rows: 99, cols: 128, tokens: 3, format, gemm, batch: 'prefill' });
    });
  }
});

describe('quantized prefill, gemm=tiled with its K split (what a GPU runs when the row tiles are few)', () => {
  it('K ranges of uneven length (17 groups in 3 ranges), q8 and q4, matmul and SwiGLU', async () => {
    for (const format of QUANT_FORMATS) {
      await checkMatmul({ rows: 203, cols: 544, tokens: 45, format, gemm: 'tiled', splits: 3, accumulate: true });
      await checkSwiGLU({ rows: 70, cols: 544, tokens: 21, format, gemm: 'tiled', splits: 5 });
    }
  });
});

describe('quantized prefill: real shape', () => {
  it('down_proj of the 1b model (2048x5632), q4, 23 tokens into the residual, under every gemm strategy', async () => {
    for (const gemm of GEMMS) await checkMatmul({ rows: 2048, cols: 5632, tokens: 23, format: 'q4', gemm, accumulate: true });
  }, 600_000);
});
