import { describe, expect, it } from 'vitest';
import { getGpu } from './device.ts';
import { createStorageBuffer, readF32, uploadF32 } from './buffers.ts';
import { Encoder, getPipeline, shaderSource, UniformLayout } from './encoder.ts';
import { GpuProfiler } from './profiler.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, poison, randomNormal } from '../util/testing.ts';

const SCALE = /* wgsl */ `
struct Params {
  n: u32,      // elements
  a: f32,
  shift: i32,  // added after scaling
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < p.n) { y[gid.x] = p.a * x[gid.x] + f32(p.shift); }
}`;
const LAYOUT = new UniformLayout({ n: 'u32', a: 'f32', shift: 'i32' });

describe('uniform layouts', () => {
  it('accept the WGSL struct they describe, comments and all, and refuse one that drifted', () => {
    expect(() => LAYOUT.check(SCALE)).not.toThrow();
    expect(() => new UniformLayout({ n: 'u32', a: 'f32' }).check(SCALE)).toThrow(/differs from the TypeScript layout/);
    expect(() => new UniformLayout({ n: 'u32', shift: 'i32', a: 'f32' }).check(SCALE)).toThrow(/differs/);
    expect(() => new UniformLayout({ n: 'u32', a: 'u32', shift: 'i32' }).check(SCALE)).toThrow(/differs/);
    expect(() => LAYOUT.check('struct Other { n: u32 }')).toThrow(/no 'struct Params'/);
  });

  it('pack typed fields in order, and the kernel reads them (twice, through a cached bind group)', async () => {
    const gpu = await getGpu();
    const seed = freshSeed();
    const rng = new Rng(seed);
    const n = 1000 + (seed % 61);
    const x = randomNormal(rng, n);
    const xb = uploadF32(gpu, x);
    const yb = createStorageBuffer(gpu, n * 4);
    const pipeline = getPipeline(gpu, shaderSource(SCALE), 'main', {}, 'scale');
    for (const [a, shift] of [[rng.normal(), -3], [rng.normal(), 7]] as const) {
      poison(gpu, yb);
      const enc = new Encoder(gpu);
      enc.dispatch(pipeline, LAYOUT.pack({ n, a, shift }), [xb, yb], [Math.ceil(n / 64)]);
      enc.submit();
      const y = await readF32(gpu, yb, n);
      const af = Math.fround(a);
      y.forEach((v, i) => expect(Math.abs(v - (af * x[i]! + shift)), `seed ${seed}, i ${i}`).toBeLessThanOrEqual(1e-5 * (Math.abs(af * x[i]!) + Math.abs(shift))));
    }
    xb.destroy();
    yb.destroy();
  });

  it('profiler: one timed kernel per dispatch, with its label, calls and bytes, then back to one pass', async () => {
    const gpu = await getGpu();
    if (!gpu.profile.features.timestampQuery) return; // nothing to time on this adapter
    const n = 4099;
    const xb = uploadF32(gpu, randomNormal(new Rng(freshSeed()), n));
    const yb = createStorageBuffer(gpu, n * 4);
    const pipeline = getPipeline(gpu, shaderSource(SCALE), 'main', {}, 'scale');
    const prof = GpuProfiler.attach(gpu);
    try {
      const enc = new Encoder(gpu);
      for (let i = 0; i < 3; i++) enc.dispatch(pipeline, LAYOUT.pack({ n, a: 2, shift: i }), [xb, yb], [Math.ceil(n / 64)], { bytes: 8 * n });
      enc.submit();
      const step = await prof.endStep();
      expect(step.dispatches).toBe(3);
      expect(step.gpuSeconds).toBeGreaterThanOrEqual(0);
      expect(step.spanSeconds).toBeGreaterThanOrEqual(step.idleSeconds);
      expect(prof.kernels()).toEqual([expect.objectContaining({ label: 'scale', calls: 3, bytes: 24 * n })]);
    } finally {
      prof.detach();
    }
    const enc = new Encoder(gpu);
    enc.dispatch(pipeline, LAYOUT.pack({ n, a: 1, shift: 0 }), [xb, yb], [Math.ceil(n / 64)]);
    enc.submit();
    expect(prof.kernels()[0]!.calls).toBe(3);
    await readF32(gpu, yb, 1);
    xb.destroy();
    yb.destroy();
  });
});
