/**
 * Matmul and SwiGLU in a batched step's shapes (`batch`, continuous batching): against the CPU
 * references, and each token's result bit for bit the same in a call of any token count (alone,
 * or in any slot of a batch), under every matvec strategy this device runs.
 */
import { describe, expect, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, type GpuMatrix, type WeightDType } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import { runnable, type KernelPlan } from '../plan.ts';
import { matmul, matmulSwiGLU, MATVEC_MAX_TOKENS, type BatchShape } from './index.ts';
import { matmulRef } from './matmul.ref.ts';
import { swigluRef } from './swiglu.ref.ts';
import { randomMatrix } from './fixtures.ts';

const TOLERANCE: Record<WeightDType, number> = { f32: 1e-5, f16: 1e-3, bf16: 1e-3 };
const profile = (await getGpu()).profile;
const VARIANTS = runnable(profile, 'matvec');
const GEMMS = runnable(profile, 'gemm');
type Plan = { matvec: KernelPlan['matvec']; gemm: KernelPlan['gemm'] };

/** Runs `op` on `x` ([tokens, cols]) and returns y ([tokens, rows]). */
async function run(op: 'matmul' | 'swiglu', w: GpuMatrix, up: GpuMatrix, x: Float32Array, tokens: number, plan: Plan, batch: BatchShape) {
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

async function check(op: 'matmul' | 'swiglu', batch: BatchShape, plan: Plan, rows: number, cols: number, dtype: WeightDType, counts: number[]) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const w = randomMatrix(gpu, rng, rows, cols, dtype);
  const up = randomMatrix(gpu, rng, rows, cols, dtype);
  const most = Math.max(...counts);
  const x = randomNormal(rng, most * cols);
  // Each token alone: the reference for its bits in every larger call.
  const alone: Float32Array[] = [];
  for (let t = 0; t < most; t++) alone.push(await run(op, w.matrix, up.matrix, x.subarray(t * cols, (t + 1) * cols), 1, plan, batch));
  for (const tokens of counts) {
    const label = `seed ${seed}, ${op} batch=${batch} matvec=${plan.matvec} gemm=${plan.gemm}, ${rows}x${cols} ${dtype}, tokens ${tokens}`;
    const y = await run(op, w.matrix, up.matrix, x.subarray(0, tokens * cols), tokens, plan, batch);
    const expected = op === 'matmul' ? matmulRef(x.subarray(0, tokens * cols), w.values, tokens, rows, cols) : swigluRef(x.subarray(0, tokens * cols), w.values, up.values, tokens, rows, cols);
    expect(maxRelError(y, expected), label).toBeLessThan(TOLERANCE[dtype]);
    for (let t = 0; t < tokens; t++) {
      expect(Array.from(y.subarray(t * rows, (t + 1) * rows)), `${label}: token ${t} differs from itself alone`).toEqual(Array.from(alone[t]!));
    }
  }
  destroyMatrix(w.matrix);
  destroyMatrix(up.matrix);
}

// A decode step past MATVEC_MAX_TOKENS rows runs the matvec over blocks of them, or the gemm where
// it adds a row as the matvec does (the table's wideDecode cell: rows with broadcast): every pairing here.
const DECODE_PLANS: Plan[] = VARIANTS.flatMap((matvec) => GEMMS.map((gemm) => ({ matvec, gemm })));
describe.each(DECODE_PLANS.map((p) => [`matvec=${p.matvec} gemm=${p.gemm}`, p] as const))('batched decode shape, %s', (_, plan) => {
  it(`1 to 32 tokens (past ${MATVEC_MAX_TOKENS}: wide decode steps), every token as alone (matmul f16 and f32, SwiGLU bf16, rows not multiples of the tiles)`, async () => {
    await check('matmul', 'decode', plan, 203, 136, 'f16', [1, 3, MATVEC_MAX_TOKENS, MATVEC_MAX_TOKENS + 1, 17, 32]);
    await check('matmul', 'decode', plan, 45, 40, 'f32', [2, 13, 32]);
    await check('swiglu', 'decode', plan, 75, 64, 'bf16', [2, 5, MATVEC_MAX_TOKENS, 19, 32]);
  });
});

describe.each(GEMMS)('batched prefill shape, gemm=%s', (gemm) => {
  it('any token count, every token as alone (matmul f32, SwiGLU f16)', async () => {
    await check('matmul', 'prefill', { matvec: 'rows', gemm }, 77, 72, 'f32', [1, 9, 40]);
    await check('swiglu', 'prefill', { matvec: 'rows', gemm }, 41, 80, 'f16', [3, 11]);
  });
});
