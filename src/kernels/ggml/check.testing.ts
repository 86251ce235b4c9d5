/**
 * The block formats' product and gather checks (ggml/*.test.ts): random valid blocks in the
 * file layout, packed part by part as the loader packs them (pack.ts), the output poisoned (or
 * a random y to accumulate into), one call, and the plain-TypeScript product over the same
 * weights dequantized by the reference (dequant.ref.ts).
 * Tolerance: the gemm and lanes kernels sum the reference's own f32 weights, so only the
 * summation order differs; matvec_rows sums a (q . x) + b sum(x) per half group, whose offset
 * term may cancel against the codes' (w = a q - dm with both terms of a weight's size): f32
 * rounding of terms up to ~2x the weights'. 5e-5 of the largest output covers both at 14336
 * columns (observed: under 1e-5).
 */
import { expect } from 'vitest';
import { getGpu, type Gpu } from '../../gpu/device.ts';
import { allocateMatrix, createStorageBuffer, destroyMatrix, readF32, uploadF32, writeBuffer, type GpuMatrix } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import { matmul, matmulSwiGLU, type BatchShape, type MatmulPlan } from '../matmul/index.ts';
import { matmulRef } from '../matmul/matmul.ref.ts';
import { swigluRef } from '../matmul/swiglu.ref.ts';
import { GGML_TYPES, type GgmlType } from './types.ts';
import { ggmlDeviceDType, packGgmlRows } from './pack.ts';
import { dequantize } from './dequant.ref.ts';
import { randomBlocks } from './blocks.testing.ts';

export const GGML_TOLERANCE = 5e-5;

/** The block formats with kernels of their own, in the issue's order. */
export const BLOCK_TYPES: readonly GgmlType[] = ['Q4_K', 'Q6_K', 'Q5_K', 'Q5_0', 'Q4_1', 'Q5_1', 'Q2_K', 'Q3_K'];

/** Random file rows of `type` ([rows, cols]) and their reference weights. */
export function randomFileRows(rng: Rng, type: GgmlType, rows: number, cols: number): { file: Uint8Array; values: Float32Array } {
  const blocks = (rows * cols) / GGML_TYPES[type].blockValues;
  const file = randomBlocks(type, blocks, rng);
  return { file, values: dequantize(type, file, rows * cols) };
}

/** A matrix of `type` on the device, written part by part through packGgmlRows (in two runs of rows per part, as a loader streaming rows may). */
export function uploadGgml(gpu: Gpu, type: GgmlType, file: Uint8Array, rows: number, cols: number, maxPartBytes?: number): GpuMatrix {
  const t = GGML_TYPES[type];
  const fileRowBytes = (cols / t.blockValues) * t.blockBytes;
  const m = allocateMatrix(gpu, rows, cols, ggmlDeviceDType(type), `w ${type}`, maxPartBytes);
  for (const part of m.parts) {
    const split = Math.ceil(part.rows / 3);
    for (const [r, n] of [[0, split], [split, part.rows - split]] as const) {
      const rowsBytes = file.subarray((part.row0 + r) * fileRowBytes, (part.row0 + r + n) * fileRowBytes);
      for (const w of packGgmlRows(type, rowsBytes, n, cols, r, part.rows)) writeBuffer(gpu, part.buffer, w.data, w.offset);
    }
  }
  return m;
}

export interface GgmlCase {
  type: GgmlType;
  rows: number;
  cols: number;
  tokens: number;
  plan: MatmulPlan;
  accumulate?: boolean;
  maxPartBytes?: number;
  batch?: BatchShape;
}

function label(kind: string, c: GgmlCase, seed: number, parts: number): string {
  return `seed ${seed}, ${kind} matvec=${c.plan.matvec}${c.plan.gemm ? ` gemm=${c.plan.gemm}` : ''}, ${c.rows}x${c.cols} ${c.type}, tokens ${c.tokens}${c.accumulate ? ', accumulate' : ''}${c.batch ? `, batch ${c.batch}` : ''}, parts ${parts}`;
}

/** Checks one matmul call; returns the number of parts the matrix was split into. */
export async function checkGgmlMatmul(c: GgmlCase): Promise<number> {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { file, values } = randomFileRows(rng, c.type, c.rows, c.cols);
  const w = uploadGgml(gpu, c.type, file, c.rows, c.cols, c.maxPartBytes);
  const x = randomNormal(rng, c.tokens * c.cols);
  const xb = uploadF32(gpu, x);
  const yb = createStorageBuffer(gpu, c.tokens * c.rows * 4);
  const y0 = c.accumulate ? randomNormal(rng, c.tokens * c.rows, 10) : null;
  if (y0) writeBuffer(gpu, yb, y0);
  else poison(gpu, yb);
  const enc = new Encoder(gpu);
  matmul(enc, { x: xb, w, y: yb, tokens: c.tokens, accumulate: c.accumulate, plan: c.plan, batch: c.batch });
  enc.submit();
  const y = await readF32(gpu, yb, c.tokens * c.rows);
  xb.destroy();
  yb.destroy();
  destroyMatrix(w);
  const expected = matmulRef(x, values, c.tokens, c.rows, c.cols);
  if (y0) for (let i = 0; i < expected.length; i++) expected[i] = expected[i]! + y0[i]!;
  expect(maxRelError(y, expected), label('matmul', c, seed, w.parts.length)).toBeLessThan(GGML_TOLERANCE);
  return w.parts.length;
}

export async function checkGgmlSwiGLU(c: Omit<GgmlCase, 'accumulate'>): Promise<void> {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const g = randomFileRows(rng, c.type, c.rows, c.cols);
  const u = randomFileRows(rng, c.type, c.rows, c.cols);
  const gate = uploadGgml(gpu, c.type, g.file, c.rows, c.cols, c.maxPartBytes);
  const up = uploadGgml(gpu, c.type, u.file, c.rows, c.cols, c.maxPartBytes);
  const x = randomNormal(rng, c.tokens * c.cols, 1 / Math.sqrt(c.cols));
  const xb = uploadF32(gpu, x);
  const yb = createStorageBuffer(gpu, c.tokens * c.rows * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  matmulSwiGLU(enc, { x: xb, gate, up, y: yb, tokens: c.tokens, plan: c.plan, batch: c.batch });
  enc.submit();
  const y = await readF32(gpu, yb, c.tokens * c.rows);
  xb.destroy();
  yb.destroy();
  destroyMatrix(gate);
  destroyMatrix(up);
  const expected = swigluRef(x, g.values, u.values, c.tokens, c.rows, c.cols);
  expect(maxRelError(y, expected), label('swiglu', c, seed, gate.parts.length)).toBeLessThan(GGML_TOLERANCE);
}
