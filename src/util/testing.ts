/**
 * Shared helpers for tests: fresh seeds (printed so a failure can be replayed),
 * random tensors, poisoned outputs, and error measures used by the kernel tests.
 */
import type { Gpu } from '../gpu/device.ts';
import { Rng } from './rng.ts';

/** A new seed each run, unless TEST_SEED pins one. Tests print it in failure messages. */
export function freshSeed(): number {
  const pinned = process.env.TEST_SEED;
  if (pinned) return Number(pinned) >>> 0;
  return (Date.now() ^ (process.hrtime()[1] << 7) ^ (process.pid << 16)) >>> 0;
}

export function randomNormal(rng: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * scale;
  return out;
}

export function randomUniform(rng: Rng, n: number, lo: number, hi: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rng.next();
  return out;
}

/** max |a - b| / max(max |b|, tiny): error relative to the reference's magnitude. */
export function maxRelError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let maxErr = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= maxErr)) maxErr = Number.isNaN(d) ? Infinity : Math.max(maxErr, d);
    maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  }
  return maxErr / Math.max(maxRef, 1e-30);
}

export function maxAbsError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let m = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

/** Fills a buffer with NaN (f32 quiet NaN bits) so a test sees any element a kernel failed to write. */
export function poison(gpu: Gpu, buffer: GPUBuffer): void {
  const words = new Uint32Array(buffer.size / 4).fill(0x7fc00000);
  gpu.device.queue.writeBuffer(buffer, 0, words);
}
