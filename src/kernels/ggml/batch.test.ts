/**
 * The block formats in a batched step's shapes (continuous batching): each token's result bit
 * for bit the same in a call of any token count (alone, or in any slot of a batch), under every
 * matvec strategy and gemm this device runs; and, under matvec=rows, the bits of the token
 * alone outside any batch (matvec_rows.wgsl compiled for 1 token: the same chain). The values
 * themselves: matmul.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, type GpuMatrix } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, poison, randomNormal } from '../../util/testing.ts';
import { runnable, type KernelPlan } from '../plan.ts';
import { matmul, matmulSwiGLU, MATVEC_MAX_TOKENS, type BatchShape } from '../matmul/index.ts';
import { randomFileRows, uploadGgml } from './check.testing.ts';
import type { GgmlType } from './types.ts';

const profile = (await getGpu()).profile;
const MATVEC = runnable(profile, 'matvec');
const GEMM = runnable(profile, 'gemm');
type Plan = { matvec: KernelPlan['matvec']; gemm: KernelPlan['gemm'] };

async function run(op: 'matmul' | 'swiglu', w: GpuMatrix, up: GpuMatrix, x: Float32Array, tokens: number, plan: Plan, batch?: BatchShape) {
  const gpu = await getGpu();
  const xb = uploadF32(gpu, x);
  const yb = createStorageBuffer(gpu, tokens * w.rows * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  if (op === 'matmul') matmul(enc, { x: xb, w, y: yb, tokens, plan, batch });
  else matmulSwiGLU(enc, { x: xb, gate: w, up, y: yb, tokens, plan, batch });
  enc.submit();
  const y = await readF32(gpu, yb, tokens * w.rows);
  xb.destroy();
  yb.destroy();
  return y;
}

async function check(op: 'matmul' | 'swiglu', batch: BatchShape, plan: Plan, type: GgmlType, rows: number, cols: number, counts: number[]) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const w = uploadGgml(gpu, type, randomFileRows(rng, type, rows, cols).file, rows, cols);
  const up = uploadGgml(gpu, type, randomFileRows(rng, type, rows, cols).file, rows, cols);
  const most = Math.max(...counts);
  const x = randomNormal(rng, most * cols, 1 / Math.sqrt(cols));
  const alone: Float32Array[] = [];
  for (let t = 0; t < most; t++) alone.push(await run(op, w, up, x.subarray(t * cols, (t + 1) * cols), 1, plan, batch));
  const label = `seed ${seed}, ${op} batch=${batch} matvec=${plan.matvec} gemm=${plan.gemm}, ${rows}x${cols} ${type}`;
  if (batch === 'decode' && plan.matvec === 'rows') {
    const outside = await run(op, w, up, x.subarray(0, cols), 1, plan);
    expect(Array.from(outside), `${label}: token 0 alone outside a batch`).toEqual(Array.from(alone[0]!));
  }
  for (const tokens of counts) {
    const y = await run(op, w, up, x.subarray(0, tokens * cols), tokens, plan, batch);
    for (let t = 0; t < tokens; t++) {
      expect(Array.from(y.subarray(t * rows, (t + 1) * rows)), `${label}, tokens ${tokens}: token ${t} differs from itself alone`).toEqual(Array.from(alone[t]!));
    }
  }
  destroyMatrix(w);
  destroyMatrix(up);
}

// Q4_K, most of a Q4_K_M file: the other formats run these kernels with another decode file, and
// the order of a row's sums is the kernels' (a format's decode gives weights, not sums).
describe.each(['Q4_K'] as const)('%s', (type) => {
  it.each(MATVEC)(`batched decode, matvec=%s: 1 to ${MATVEC_MAX_TOKENS + 3} tokens, every token as alone`, async (matvec) => {
    const plan = { matvec, gemm: 'regtile' as const };
    await check('matmul', 'decode', plan, type, 75, 512, [3, MATVEC_MAX_TOKENS, MATVEC_MAX_TOKENS + 3]);
    await check('swiglu', 'decode', plan, type, 37, 256, [2, MATVEC_MAX_TOKENS + 1]);
  });

  it.each(GEMM)('batched prefill, gemm=%s: any token count, every token as alone', async (gemm) => {
    const plan = { matvec: 'rows' as const, gemm };
    await check('matmul', 'prefill', plan, type, 77, 512, [9, 40]);
    await check('swiglu', 'prefill', plan, type, 41, 256, [3, 11]);
  });
});
