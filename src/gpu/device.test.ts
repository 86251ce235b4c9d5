import { describe, expect, it } from 'vitest';
import { formatSubgroupMatrixProbe, getGpu, pinnedGpu, probeSubgroupMatrix, SUBGROUP_MATRIX_FEATURE } from './device.ts';
import { createStorageBuffer, readF32, uploadF32 } from './buffers.ts';
import { Encoder, getPipeline, params } from './encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, randomNormal, poison } from '../util/testing.ts';

// y[i] = a * x[i] + b[i]: small enough to check exactly, real enough to exercise
// uniforms, storage bindings, a dispatch with a partial last workgroup, and read-back.
const SAXPY = /* wgsl */ `
struct Params { n: u32, a: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < p.n) { y[gid.x] = p.a * x[gid.x] + b[gid.x]; }
}`;

async function runSaxpy(seed: number, n: number) {
  const gpu = await getGpu();
  const rng = new Rng(seed);
  const x = randomNormal(rng, n);
  const b = randomNormal(rng, n);
  const a = rng.normal();
  const xb = uploadF32(gpu, x);
  const bb = uploadF32(gpu, b);
  const yb = createStorageBuffer(gpu, n * 4);
  poison(gpu, yb);
  const enc = new Encoder(gpu);
  enc.dispatch(getPipeline(gpu, SAXPY), params([n, { f32: a }]), [xb, bb, yb], [Math.ceil(n / 64)]);
  enc.submit();
  const y = await readF32(gpu, yb, n);
  for (const buf of [xb, bb, yb]) buf.destroy();
  const expected = x.map((xi, i) => a * xi + b[i]!);
  // fma may fuse a*x+b, so allow a few f32 roundings of the terms' magnitude.
  const tol = x.map((xi, i) => 4 * 2 ** -24 * (Math.abs(a * xi) + Math.abs(b[i]!)));
  return { y, expected, tol };
}

describe('WebGPU device', () => {
  it('reports an adapter with the limits the engine needs', async () => {
    const gpu = await getGpu();
    expect(gpu.report.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 2 ** 20);
    expect(gpu.device.limits.maxStorageBufferBindingSize).toBe(gpu.report.limits.maxStorageBufferBindingSize);
    expect(gpu.report.features.length).toBeGreaterThan(0);
  });

  it('runs a WGSL compute shader end to end', async () => {
    const seed = freshSeed();
    const { y, expected, tol } = await runSaxpy(seed, 1000 + (seed % 77));
    for (let i = 0; i < y.length; i++) {
      expect(Math.abs(y[i]! - expected[i]!), `seed ${seed}, i ${i}`).toBeLessThanOrEqual(tol[i]!);
    }
  });

  it('survives garbage collection between dispatches', async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    expect(gc, 'run with --expose-gc (vitest.config.ts sets it)').toBeTypeOf('function');
    for (let round = 0; round < 4; round++) {
      gc!();
      await new Promise((r) => setTimeout(r, 10));
      gc!();
      const seed = freshSeed() + round;
      const { y, expected, tol } = await runSaxpy(seed, 4097);
      expect(y.every((v, i) => Math.abs(v - expected[i]!) <= tol[i]!), `seed ${seed}`).toBe(true);
    }
    expect(pinnedGpu()?.instance).toBeTruthy();
  });

  it('probes subgroup matrices on the same adapter, with the toggles, leaving the device alone', async () => {
    const gpu = await getGpu();
    const probe = await probeSubgroupMatrix();
    expect(probe.adapter).toBe(gpu.adapter.info.description || probe.adapter);
    expect(probe.toggles).toContain('allow_unsafe_apis');
    // The feature and its shapes come together: offered with none, or shapes without the feature, is a misreading.
    expect(probe.offered).toBe(probe.configs.length > 0);
    for (const c of probe.configs) expect(c.M * c.N * c.K, JSON.stringify(c)).toBeGreaterThan(0);
    // The process-wide device was created without the unsafe toggles and must not have gained the feature.
    expect(gpu.device.features.has(SUBGROUP_MATRIX_FEATURE)).toBe(false);
    expect(formatSubgroupMatrixProbe(probe)).toContain(probe.offered ? 'offered by' : 'not offered by');
    const { y, expected, tol } = await runSaxpy(freshSeed(), 333);
    expect(y.every((v, i) => Math.abs(v - expected[i]!) <= tol[i]!)).toBe(true);
  });
});
