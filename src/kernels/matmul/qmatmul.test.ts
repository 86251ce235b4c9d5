import { describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, QUANT_FORMATS, type GpuMatrix } from '../../gpu/buffers.ts';
import { Encoder, observeDispatches } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import { runnable, type KernelPlan } from '../plan.ts';
import { matmul, matmulSwiGLU, MATVEC_MAX_TOKENS, type BatchShape } from './index.ts';
import { matmulRef } from './matmul.ref.ts';
import { swigluRef } from './swiglu.ref.ts';
import { randomQuantMatrix } from './fixtures.ts';
import { checkQuantMatmul, checkQuantSwiGLU, QUANT_TOLERANCE as TOLERANCE } from './qcheck.testing.ts';

// The check and its tolerance: qcheck.testing.ts.
const VARIANTS = runnable((await getGpu()).profile, 'matvec');
const checkMatmul = checkQuantMatmul;
const checkSwiGLU = checkQuantSwiGLU;

// Each (variant, format, token tile) is a pipeline compiled for seconds on lavapipe: shapes
// are spread over the cases rather than crossed.
describe.each(VARIANTS)('quantized matmul and SwiGLU, matvec=%s', (matvec) => {
  for (const format of QUANT_FORMATS) {
    it(`${format}: one token, rows not a multiple of any tile, into a random y, split matrices`, async () => {
      await checkMatmul({ rows: 1001, cols: 1056, tokens: 1, format, matvec });
      await checkMatmul({ rows: 37, cols: 64, tokens: 1, format, matvec, accumulate: true });
      // 96 columns: 3 groups, scale rows padded to 8; ~100 rows per part.
      const rowBytes = format === 'q8' ? 96 + 16 : 48 + 16;
      expect(await checkMatmul({ rows: 411, cols: 96, tokens: 1, format, matvec, maxPartBytes: 100 * rowBytes })).toBe(5);
      await checkSwiGLU({ rows: 203, cols: 4096, tokens: 1, format, matvec });
    });

    it(`${format}: 2 to 8 tokens (decode kernels) and prefill (gemm, regtile when the plan names none: qgemm.test.ts loops over every gemm), split matrices`, async () => {
      await checkMatmul({ rows: 203, cols: 160, tokens: 3, format, matvec, accumulate: true });
      await checkMatmul({ rows: 70, cols: 128, tokens: 130, format, matvec });
      await checkMatmul({ rows: 411, cols: 96, tokens: 17, format, matvec, maxPartBytes: 100 * 112 });
      await checkSwiGLU({ rows: 37, cols: 192, tokens: 8, format, matvec });
      await checkSwiGLU({ rows: 301, cols: 64, tokens: 19, format, matvec });
    });
  }
});

/** y ([tokens, rows]) of one call; `batch` as a batched step passes it. */
async function runQuant(op: 'matmul' | 'swiglu', w: GpuMatrix, up: GpuMatrix, x: Float32Array, tokens: number, matvec: KernelPlan['matvec'], batch?: BatchShape) {
  const gpu = await getGpu();
  const xb = uploadF32(gpu, x);
  const yb = createStorageBuffer(gpu, tokens * w.rows * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  if (op === 'matmul') matmul(enc, { x: xb, w, y: yb, tokens, plan: { matvec }, batch });
  else matmulSwiGLU(enc, { x: xb, gate: w, up, y: yb, tokens, plan: { matvec }, batch });
  enc.submit();
  const y = await readF32(gpu, yb, tokens * w.rows);
  xb.destroy();
  yb.destroy();
  return y;
}

// A batched decode step (continuous batching) must give each token the bits it gets in a step of
// any other count; under matvec=rows also the bits of the token alone, outside any batch (the
// same qmatvec_rows chain, compiled for 1 token), so one stream decodes alike through forward()
// and through the scheduler.
describe.each(VARIANTS)('quantized batched decode (1 to 32 tokens), matvec=%s: each token as alone, bit for bit', (matvec) => {
  it.each(QUANT_FORMATS)('%s', async (format) => {
    const gpu = await getGpu();
    const seed = freshSeed();
    const rng = new Rng(seed);
    const rows = 203;
    const cols = 288;
    const w = randomQuantMatrix(gpu, rng, rows, cols, format);
    const up = randomQuantMatrix(gpu, rng, rows, cols, format);
    const most = 4 * MATVEC_MAX_TOKENS; // a wide decode step: the kernel over blocks of MATVEC_MAX_TOKENS
    const x = randomNormal(rng, most * cols);
    for (const op of ['matmul', 'swiglu'] as const) {
      const token = (t: number) => x.subarray(t * cols, (t + 1) * cols);
      const alone: Float32Array[] = [];
      for (let t = 0; t < most; t++) alone.push(await runQuant(op, w.matrix, up.matrix, token(t), 1, matvec, 'decode'));
      if (matvec === 'rows') {
        for (let t = 0; t < 2; t++) expect(Array.from(await runQuant(op, w.matrix, up.matrix, token(t), 1, matvec)), `seed ${seed}, ${op} ${format}: token ${t} unbatched`).toEqual(Array.from(alone[t]!));
      }
      for (const tokens of [3, MATVEC_MAX_TOKENS, MATVEC_MAX_TOKENS + 5, most]) {
        const label = `seed ${seed}, ${op} ${format} matvec=${matvec}, ${rows}x${cols}, ${tokens} tokens`;
        const y = await runQuant(op, w.matrix, up.matrix, x.subarray(0, tokens * cols), tokens, matvec, 'decode');
        const expected = op === 'matmul' ? matmulRef(x.subarray(0, tokens * cols), w.values, tokens, rows, cols) : swigluRef(x.subarray(0, tokens * cols), w.values, up.values, tokens, rows, cols);
        expect(maxRelError(y, expected), label).toBeLessThan(TOLERANCE);
        for (let t = 0; t < tokens; t++) expect(Array.from(y.subarray(t * rows, (t + 1) * rows)), `${label}: token ${t}`).toEqual(Array.from(alone[t]!));
      }
    }
    destroyMatrix(w.matrix);
    destroyMatrix(up.matrix);
  });
});

describe('quantized matmul: real shapes', () => {
  it("down_proj 4096x14336 (q4) and q_proj 4096x4096 (q8) into the residual, decode and 9 tokens", async () => {
    for (const matvec of VARIANTS) await checkMatmul({ rows: 4096, cols: 14336, tokens: 1, format: 'q4', matvec, accumulate: true });
    await checkMatmul({ rows: 4096, cols: 4096, tokens: 9, format: 'q8', matvec: 'rows', accumulate: true });
  }, 600_000); // three 58M-weight products on lavapipe, and their CPU references

  it('matvec=rows on an adapter without subgroups of 8 lanes: one token through qmatvec_lanes', async () => {
    // qmatvec_rows shares x by subgroup broadcast; index.ts falls back where it cannot.
    const real = await getGpu();
    const gpu: Gpu = { ...real, profile: { ...real.profile, subgroupSizes: null } };
    const labels: string[] = [];
    observeDispatches(real, { pass: (label) => (labels.push(label), {}), encoded: () => {} });
    try {
      for (const format of QUANT_FORMATS) {
        await checkMatmul({ rows: 77, cols: 288, tokens: 1, format, matvec: 'rows', accumulate: true, gpu });
        await checkSwiGLU({ rows: 45, cols: 160, tokens: 1, format, matvec: 'rows', gpu });
      }
    } finally {
      observeDispatches(real, null);
    }
    expect(labels.length).toBe(4);
    for (const l of labels) expect(l).toMatch(/^(matmul|swiglu) lanes workgroup q[48] /);
  });

  it('refuses widths that are not whole groups', async () => {
    const gpu = await getGpu();
    const rng = new Rng(freshSeed());
    expect(() => randomQuantMatrix(gpu, rng, 4, 48, 'q4')).toThrow(/multiple of 32/);
  });
});
