import { describe, expect, it } from 'vitest';
import { getGpu } from './device.ts';
import { createStorageBuffer, readF32, uploadF32 } from './buffers.ts';
import { checkShader, Encoder, getPipeline, provideWgsl, shaderSource, UniformLayout, wgsl, wgslFiles } from './encoder.ts';
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

describe('WGSL includes', () => {
  // Files given as text under made-up URLs, as a browser bundle gives them (provideWgsl).
  const at = (name: string) => `file:///includes-test/${name}`;
  provideWgsl({
    [at('kernel.wgsl')]: [
      '// A kernel: its header, then what it includes.',
      'enable subgroups;',
      '// #include "lib/params.wgsl"   Params',
      '// #include <reader>            the weight reader',
      '// #include "lib/sums.wgsl"',
      '',
      '@compute @workgroup_size(8)',
      'fn main(@builtin(subgroup_invocation_id) lane: u32) { y[lane] = subgroupAdd(read(lane) * f32(p.n)) + twice(1.0); }',
    ].join('\n'),
    [at('lib/params.wgsl')]: 'struct Params { n: u32 }\n@group(0) @binding(0) var<uniform> p: Params;',
    [at('lib/sums.wgsl')]: '// #include "params.wgsl"\nfn twice(v: f32) -> f32 { return 2.0 * v; }',
    [at('lib/read_a.wgsl')]: '// #include "../lib/sums.wgsl"\n@group(0) @binding(1) var<storage, read_write> y: array<f32>;\nfn read(i: u32) -> f32 { return twice(y[i]); }',
    [at('lib/read_b.wgsl')]: 'enable subgroups;\n@group(0) @binding(1) var<storage, read_write> y: array<f32>;\nfn read(i: u32) -> f32 { return y[i]; }',
    [at('late.wgsl')]: 'const A = 1u;\n// #include "lib/sums.wgsl"',
    [at('bad.wgsl')]: '// #include lib/sums.wgsl',
  });
  const base = at('');

  it('resolves each file once, depth-first in directive order, the named slot as the caller binds it, enable first', () => {
    expect(wgslFiles('kernel.wgsl', base, { reader: 'lib/read_a.wgsl' })).toEqual([at('lib/params.wgsl'), at('lib/sums.wgsl'), at('lib/read_a.wgsl'), at('kernel.wgsl')]);
    expect(wgslFiles('kernel.wgsl', base, { reader: 'lib/read_b.wgsl' })).toEqual([at('lib/params.wgsl'), at('lib/read_b.wgsl'), at('lib/sums.wgsl'), at('kernel.wgsl')]);
    const code = wgsl('kernel.wgsl', base, { reader: 'lib/read_b.wgsl' });
    expect(code.split('\n')[0]).toBe('enable subgroups;');
    expect(code.match(/enable subgroups;/g)).toHaveLength(1);
    expect(code.match(/struct Params/g)).toHaveLength(1);
    expect(code.indexOf('fn read(')).toBeLessThan(code.indexOf('fn twice('));
    // The same text for the same (file, slots), whatever the slots' order or spelling.
    expect(wgsl('kernel.wgsl', base, { reader: at('lib/read_b.wgsl') })).toBe(code);
  });

  it('refuses an unbound or unused slot, an include after code and a malformed directive, naming the file', () => {
    expect(() => wgsl('kernel.wgsl', base)).toThrow(/kernel\.wgsl:4: #include <reader> is not bound/);
    expect(() => wgsl('kernel.wgsl', base, { reader: 'lib/read_a.wgsl', reduce: 'lib/sums.wgsl' })).toThrow(/binds <reduce>, which no file of the module includes/);
    expect(() => wgsl('late.wgsl', base)).toThrow(/late\.wgsl:2: #include after the first line of code/);
    expect(() => wgsl('bad.wgsl', base)).toThrow(/bad\.wgsl:1: expected #include "file.wgsl" or #include <name>/);
  });

  it('gives a module the compiler takes (the enable directive hoisted above the included declarations)', async () => {
    const gpu = await getGpu();
    if (!gpu.profile.features.subgroups) return;
    await checkShader(gpu, wgsl('kernel.wgsl', base, { reader: 'lib/read_b.wgsl' }), 'includes');
  });
});
