import { describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, type WeightDType } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal, randomUniform } from '../../util/testing.ts';
import { PLAN_CHOICES, runnable, type KernelPlan } from '../plan.ts';
import { rmsNormRef } from '../rmsnorm.ref.ts';
import { normQKV, normSwiGLU } from './fused.ts';
import type { BatchShape } from './index.ts';
import { matmulRef } from './matmul.ref.ts';
import { swigluRef } from './swiglu.ref.ts';
import { randomMatrix } from './fixtures.ts';

/**
 * Relative to the output's largest magnitude, as matmul.test.ts: f32 rounding of 64..4096-term
 * sums (and of the norm's sum of squares), against the float64 references composed.
 */
const TOLERANCE: Record<WeightDType, number> = { f32: 1e-5, f16: 1e-3, bf16: 1e-3 };
const EPS = 1e-5;
/** Every matvec strategy this device runs (lavapipe: all three), under every fusion. */
const MATVEC = runnable((await getGpu()).profile, 'matvec');
const FUSE = PLAN_CHOICES.fuse;

type Case = { hidden: number; tokens: number; dtype: WeightDType; maxPartBytes?: number; plan: Pick<KernelPlan, 'matvec' | 'fuse'>; batch?: BatchShape };

/** Dispatches the front of a block records: fused (1, or norm + 1), or norm + one per matrix part. */
function expectedDispatches(op: 'qkv' | 'swiglu', c: Case, parts: number[]): number {
  const { matvec, fuse } = c.plan;
  // A decode step of any width fuses under the lanes strategies (blocks of 8 tokens); under rows
  // one token only, its norm kept apart in a step.
  const fits = c.batch === 'decode' || c.tokens <= 8;
  const decode = fits && (matvec !== 'rows' || c.tokens === 1) && parts.every((n) => n === 1) && c.hidden % 8 === 0;
  const folded = fuse === 'norm+qkv' && !(c.batch && matvec === 'rows');
  if (op === 'qkv' && decode && fuse !== 'none') return folded ? 1 : 2;
  if (op === 'swiglu' && decode && folded) return 1;
  return 1 + (op === 'qkv' ? parts.reduce((a, b) => a + b) : parts[0]!);
}

/**
 * x of scale 3 (so 1/rms matters) and a norm weight of scale ~1/sqrt(hidden), so that the
 * gate sums spread over silu's curved region and both tails; uploaded. h (the scratch of the
 * separate norm) poisoned: a fused kernel that read it would fail.
 */
function inputs(gpu: Gpu, rng: Rng, c: Case) {
  const x = randomNormal(rng, c.tokens * c.hidden, 3);
  const weight = randomUniform(rng, c.hidden, 0.25 / Math.sqrt(c.hidden), 2.5 / Math.sqrt(c.hidden));
  const h = createStorageBuffer(gpu, c.tokens * c.hidden * 4);
  poison(gpu, h);
  return { x, weight, xb: uploadF32(gpu, x), wb: uploadF32(gpu, weight), h };
}

async function checkQKV(c: Case & { rows: [number, number, number] }) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { hidden, tokens, dtype } = c;
  const ms = c.rows.map((r) => randomMatrix(gpu, rng, r, hidden, dtype, c.maxPartBytes));
  const io = inputs(gpu, rng, c);
  const ys = c.rows.map((r) => {
    const b = createStorageBuffer(gpu, tokens * r * 4);
    poison(gpu, b);
    return b;
  }) as [GPUBuffer, GPUBuffer, GPUBuffer];
  const enc = new Encoder(gpu);
  normQKV(enc, {
    x: io.xb, norm: { weight: io.wb, eps: EPS }, h: io.h, q_proj: ms[0]!.matrix, k_proj: ms[1]!.matrix, v_proj: ms[2]!.matrix,
    q: ys[0], k: ys[1], v: ys[2], tokens, plan: c.plan, batch: c.batch,
  });
  const dispatches = enc.dispatches;
  enc.submit();
  const label = `seed ${seed}, matvec=${c.plan.matvec}, fuse=${c.plan.fuse}, q/k/v ${c.rows.join('/')}x${hidden} ${dtype}, tokens ${tokens}`;
  expect(dispatches, label).toBe(expectedDispatches('qkv', c, ms.map((m) => m.matrix.parts.length)));
  const h = rmsNormRef(io.x, io.weight, tokens, hidden, EPS);
  for (let m = 0; m < 3; m++) {
    const y = await readF32(gpu, ys[m]!, tokens * c.rows[m]!);
    const expected = matmulRef(h, ms[m]!.values, tokens, c.rows[m]!, hidden);
    expect(maxRelError(y, expected), `${label}: ${['q', 'k', 'v'][m]}`).toBeLessThan(TOLERANCE[dtype]);
  }
  for (const b of [io.xb, io.wb, io.h, ...ys]) b.destroy();
  for (const m of ms) destroyMatrix(m.matrix);
}

async function checkSwiGLU(c: Case & { intermediate: number }) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { hidden, tokens, dtype, intermediate } = c;
  const gate = randomMatrix(gpu, rng, intermediate, hidden, dtype, c.maxPartBytes);
  const up = randomMatrix(gpu, rng, intermediate, hidden, dtype, c.maxPartBytes);
  const io = inputs(gpu, rng, c);
  const yb = createStorageBuffer(gpu, tokens * intermediate * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  normSwiGLU(enc, { x: io.xb, norm: { weight: io.wb, eps: EPS }, h: io.h, gate: gate.matrix, up: up.matrix, y: yb, tokens, plan: c.plan, batch: c.batch });
  const dispatches = enc.dispatches;
  enc.submit();
  const label = `seed ${seed}, matvec=${c.plan.matvec}, fuse=${c.plan.fuse}, gate/up ${intermediate}x${hidden} ${dtype}, tokens ${tokens}`;
  expect(dispatches, label).toBe(expectedDispatches('swiglu', c, [gate.matrix.parts.length]));
  const h = rmsNormRef(io.x, io.weight, tokens, hidden, EPS);
  const y = await readF32(gpu, yb, tokens * intermediate);
  expect(maxRelError(y, swigluRef(h, gate.values, up.values, tokens, intermediate, hidden)), label).toBeLessThan(TOLERANCE[dtype]);
  for (const b of [io.xb, io.wb, io.h, yb]) b.destroy();
  destroyMatrix(gate.matrix);
  destroyMatrix(up.matrix);
}

// Each pipeline compiles for seconds on lavapipe: dtypes and token counts are spread over
// the cases rather than crossed. Sizes: rows and hidden not multiples of any tile.
describe.each(MATVEC.flatMap((matvec) => FUSE.filter((f) => f !== 'none').map((fuse) => [`matvec=${matvec},fuse=${fuse}`, { matvec, fuse }] as const)))(
  'fused decode front of a block, %s, against rms_norm + matmul references',
  (_, plan) => {
    it('q/k/v: one token f16, 6 tokens bf16, one token f32', async () => {
      await checkQKV({ rows: [203, 37, 45], hidden: 136, tokens: 1, dtype: 'f16', plan });
      await checkQKV({ rows: [101, 19, 19], hidden: 72, tokens: 6, dtype: 'bf16', plan });
      await checkQKV({ rows: [37, 13, 13], hidden: 64, tokens: 1, dtype: 'f32', plan });
    });

    it("q/k/v at hidden_size 4096 (the norm's real length), 8 tokens; a split q_proj runs separately", async () => {
      await checkQKV({ rows: [300, 75, 75], hidden: 4096, tokens: 8, dtype: 'bf16', plan });
      await checkQKV({ rows: [4099, 37, 37], hidden: 64, tokens: 1, dtype: 'f16', maxPartBytes: 1000 * 128, plan });
    });

    it('a decode step of 20 rows (past 8: the fused kernels over blocks of 8 tokens, or the separate dispatches under rows)', async () => {
      await checkQKV({ rows: [101, 19, 19], hidden: 72, tokens: 20, dtype: 'bf16', plan, batch: 'decode' });
      await checkSwiGLU({ intermediate: 37, hidden: 72, tokens: 20, dtype: 'f16', plan, batch: 'decode' });
    });

    // fuse=qkv leaves the MLP's norm as its own dispatch: the unfused case below covers it.
    it.runIf(plan.fuse === 'norm+qkv')('gate/up + SwiGLU: one token f16, 5 tokens bf16, hidden 4096', async () => {
      await checkSwiGLU({ intermediate: 1001, hidden: 136, tokens: 1, dtype: 'f16', plan });
      await checkSwiGLU({ intermediate: 37, hidden: 72, tokens: 5, dtype: 'bf16', plan });
      await checkSwiGLU({ intermediate: 300, hidden: 4096, tokens: 1, dtype: 'bf16', plan });
    });
  },
);

describe('the front of a block, unfused (fuse=none) and prefill: the separate dispatches, same math', () => {
  it('fuse=none, one token; 17 tokens (prefill) under fuse=norm+qkv', async () => {
    await checkQKV({ rows: [203, 37, 45], hidden: 136, tokens: 1, dtype: 'f16', plan: { matvec: 'rows', fuse: 'none' } });
    await checkQKV({ rows: [101, 19, 19], hidden: 72, tokens: 17, dtype: 'bf16', plan: { matvec: 'rows', fuse: 'norm+qkv' } });
    await checkSwiGLU({ intermediate: 101, hidden: 72, tokens: 17, dtype: 'f16', plan: { matvec: 'rows', fuse: 'norm+qkv' } });
  });
});
