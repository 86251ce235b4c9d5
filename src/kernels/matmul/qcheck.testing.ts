/**
 * The quantized products' check, shared by the decode (qmatmul.test.ts) and prefill
 * (qgemm.test.ts) tests: fresh random q8/q4 weights and inputs, the output poisoned (or a
 * random y to accumulate into), one call, and the plain-TypeScript product over the same
 * weights dequantized plainly (quant.ref.ts). The kernels compute with exactly those weights
 * (c * d is exact in f32), so only the f32 summation order differs: the tolerance is f32's,
 * relative to the largest output.
 */
import { expect } from 'vitest';
import { getGpu, type Gpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadF32, writeBuffer, type QuantFormat } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import type { KernelPlan } from '../plan.ts';
import { matmul, matmulSwiGLU, type BatchShape, type MatmulPlan } from './index.ts';
import { matmulRef } from './matmul.ref.ts';
import { swigluRef } from './swiglu.ref.ts';
import { randomQuantMatrix } from './fixtures.ts';

export const QUANT_TOLERANCE = 2e-5;

/** `matvec` defaults to rows; `gemm` to whatever the wrapper takes when the plan names none; `gpu` to the real device. */
export interface QuantCase {
  rows: number;
  cols: number;
  tokens: number;
  format: QuantFormat;
  matvec?: KernelPlan['matvec'];
  gemm?: KernelPlan['gemm'];
  accumulate?: boolean;
  maxPartBytes?: number;
  splits?: number;
  batch?: BatchShape;
  gpu?: Gpu;
}

function planOf(c: QuantCase): MatmulPlan {
  return { matvec: c.matvec ?? 'rows', ...(c.gemm ? { gemm: c.gemm } : {}) };
}

function label(kind: string, c: QuantCase, seed: number, parts: number): string {
  const plan = `matvec=${c.matvec ?? 'rows'}${c.gemm ? ` gemm=${c.gemm}` : ''}`;
  return `seed ${seed}, ${kind} ${plan}, ${c.rows}x${c.cols} ${c.format}, tokens ${c.tokens}${c.accumulate ? ', accumulate' : ''}${c.splits ? `, splits ${c.splits}` : ''}${c.batch ? `, batch ${c.batch}` : ''}, parts ${parts}`;
}

/** Checks one matmul call; returns the number of parts the matrix was split into. */
export async function checkQuantMatmul(c: QuantCase): Promise<number> {
  const gpu = c.gpu ?? (await getGpu());
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { matrix, values } = randomQuantMatrix(gpu, rng, c.rows, c.cols, c.format, c.maxPartBytes);
  const x = randomNormal(rng, c.tokens * c.cols);
  const xb = uploadF32(gpu, x);
  const yb = createStorageBuffer(gpu, c.tokens * c.rows * 4);
  const y0 = c.accumulate ? randomNormal(rng, c.tokens * c.rows, 10) : null;
  if (y0) writeBuffer(gpu, yb, y0);
  else poison(gpu, yb);
  const enc = new Encoder(gpu);
  matmul(enc, { x: xb, w: matrix, y: yb, tokens: c.tokens, accumulate: c.accumulate, plan: planOf(c), splits: c.splits, batch: c.batch });
  enc.submit();
  const y = await readF32(gpu, yb, c.tokens * c.rows);
  xb.destroy();
  yb.destroy();
  destroyMatrix(matrix);
  const expected = matmulRef(x, values, c.tokens, c.rows, c.cols);
  if (y0) for (let i = 0; i < expected.length; i++) expected[i] = expected[i]! + y0[i]!;
  expect(maxRelError(y, expected), label('matmul', c, seed, matrix.parts.length)).toBeLessThan(QUANT_TOLERANCE);
  return matrix.parts.length;
}

export async function checkQuantSwiGLU(c: Omit<QuantCase, 'accumulate'>): Promise<void> {
  const gpu = c.gpu ?? (await getGpu());
  const seed = freshSeed();
  const rng = new Rng(seed);
  const gate = randomQuantMatrix(gpu, rng, c.rows, c.cols, c.format, c.maxPartBytes);
  const up = randomQuantMatrix(gpu, rng, c.rows, c.cols, c.format, c.maxPartBytes);
  const x = randomNormal(rng, c.tokens * c.cols, 1 / Math.sqrt(c.cols));
  const xb = uploadF32(gpu, x);
  const yb = createStorageBuffer(gpu, c.tokens * c.rows * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  matmulSwiGLU(enc, { x: xb, gate: gate.matrix, up: up.matrix, y: yb, tokens: c.tokens, plan: planOf(c), splits: c.splits, batch: c.batch });
  enc.submit();
  const y = await readF32(gpu, yb, c.tokens * c.rows);
  xb.destroy();
  yb.destroy();
  destroyMatrix(gate.matrix);
  destroyMatrix(up.matrix);
  const expected = swigluRef(x, gate.values, up.values, c.tokens, c.rows, c.cols);
  expect(maxRelError(y, expected), label('swiglu', c, seed, gate.matrix.parts.length)).toBeLessThan(QUANT_TOLERANCE);
}
