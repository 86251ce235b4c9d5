import { describe, expect, it } from 'vitest';
import type { DeviceProfile } from '../gpu/profile.ts';
import { PLAN_CHOICES, resolvePlan, type KernelPlan } from './plan.ts';
import { attentionKernel, CAPACITY, describeKernels, kernelFiles, kernelModule, MATVEC_MAX_TOKENS, productKernel, PRODUCT_SHAPES, type ProductShape } from './table.ts';

const limits = { maxComputeWorkgroupStorageSize: 16384 } as DeviceProfile['limits'];
const lavapipe: DeviceProfile = {
  kind: 'software', vendor: 'mesa', adapter: 'llvmpipe', subgroupSizes: { min: 8, max: 8 },
  features: { f16: true, subgroups: true, timestampQuery: true }, limits,
};
const gpu: DeviceProfile = { ...lavapipe, kind: 'hardware', vendor: 'acme', adapter: 'Acme 9000', subgroupSizes: { min: 32, max: 32 } };
const gpuWithout: DeviceProfile = { ...gpu, subgroupSizes: null, features: { f16: false, subgroups: false, timestampQuery: false } };

/** The lines of the listing's section whose title starts with `title` and holds `also`. */
function sectionOf(lines: string[], title: string, also = ''): string[] {
  const start = lines.findIndex((l) => l.startsWith(title) && l.includes(also));
  expect(start, `${title} ${also}`).toBeGreaterThanOrEqual(0);
  const end = lines.findIndex((l, i) => i > start && !l.startsWith(' '));
  return lines.slice(start, end < 0 ? undefined : end);
}

/** The lines under the shape label that names `shape` in a section. */
function underShape(section: string[], shape: string): string[] {
  const at = section.findIndex((l) => /^ {2}\S/.test(l) && l.includes(shape));
  expect(at, shape).toBeGreaterThan(0);
  const next = section.findIndex((l, i) => i > at && /^ {2}\S/.test(l));
  return section.slice(at + 1, next < 0 ? undefined : next);
}

describe('kernel table', () => {
  it('openchat info --kernels names, under each shape class, the file the table gives it and the files that file includes', () => {
    for (const device of [lavapipe, gpu, gpuWithout]) {
      const plan = resolvePlan(device, {}, '');
      const lines = describeKernels(plan, device);
      for (const op of ['matmul', 'swiglu'] as const) {
        for (const [dtype, weights] of [['bf16', 'f32/f16/bf16 weights'], ['q4', 'q8/q4 weights']] as const) {
          const section = sectionOf(lines, op, weights);
          for (const shape of Object.keys(PRODUCT_SHAPES) as ProductShape[]) {
            const k = productKernel(op, { dtype, cols: 4096 }, shape, plan, device);
            const body = underShape(section, PRODUCT_SHAPES[shape].split(': ').pop()!);
            const where = `${device.adapter} ${op} ${dtype} ${shape}`;
            // One entry point for both products; MATRICES says which (2: SwiGLU's gate and up).
            expect(body[0], where).toMatch(new RegExp(`^ +${k.file} @main .*MATRICES=${op === 'swiglu' ? 2 : 1}`));
            expect(body[1], where).toBe(`        includes ${kernelFiles(k).slice(0, -1).join(', ')}`);
          }
        }
      }
    }
  });

  it('OPENCHAT_KERNELS=attention=split,prefillAttention=flash turns the attention lines to split.wgsl and flash.wgsl', () => {
    const attention = (env: string) => sectionOf(describeKernels(resolvePlan(lavapipe, {}, env), lavapipe), 'attention');
    const before = attention('');
    expect(underShape(before, '1 decode token')[0]).toMatch(/^ +attention\/tiled\.wgsl @main/);
    expect(underShape(before, 'prefill chunk')[0]).toMatch(/^ +attention\/tiled\.wgsl @main/);
    const forced = attention('attention=split,prefillAttention=flash');
    expect(forced[0]).toContain('attention=split, prefillAttention=flash');
    const decode = underShape(forced, '1 decode token');
    expect(decode[0]).toMatch(/^ +attention\/split\.wgsl @main @reduce/);
    expect(decode.join('\n')).toMatch(/where the context is too short to split.*: attention\/tiled\.wgsl @main/);
    const prefill = underShape(forced, 'prefill chunk');
    expect(prefill[0]).toMatch(/^ +attention\/flash\.wgsl @main +BT=16/);
    expect(prefill[1]).toBe('        includes kv_cache_f32.wgsl, attention/chunk.wgsl, attention/softmax.wgsl');
    // A decode step's rows attend through tiled.wgsl's decode_rows whatever the strategy.
    expect(underShape(forced, 'decode step rows')[0]).toMatch(/attention\/tiled\.wgsl @decode_rows/);
    expect(attention('kvCache=f16').join('\n')).toContain('includes kv_cache_f16.wgsl, attention/chunk.wgsl');
  });

  it('follows the device and the call where no key says: qmatvec_rows needs subgroups of 8 lanes, flash narrow heads, split long contexts', () => {
    const plan = { matvec: 'rows', gemm: 'regtile' } as const;
    expect(productKernel('matmul', { dtype: 'q8', cols: 64 }, 'token', plan, lavapipe).file).toBe('matmul/qmatvec_rows.wgsl');
    expect(productKernel('matmul', { dtype: 'q8', cols: 64 }, 'token', plan, gpuWithout)).toMatchObject({ file: 'matmul/qmatvec_lanes.wgsl', slots: { reduce: 'matmul/reduce_workgroup.wgsl' } });
    expect(productKernel('matmul', { dtype: 'f16', cols: 36 }, 'prefill', plan, lavapipe).file).toBe('matmul/gemm_words.wgsl');
    expect(() => productKernel('swiglu', { dtype: 'f16', cols: 36 }, 'prefill', plan, lavapipe)).toThrow(/no swiglu kernel/);
    const flash = { prefillAttention: 'flash', kvCache: 'f32' } as const;
    expect(attentionKernel('prefill', flash, () => false).file).toBe('attention/flash.wgsl');
    expect(attentionKernel('prefill', flash, (c) => c === 'wideHeads').file).toBe('attention/tiled.wgsl');
    expect(attentionKernel('decode', { attention: 'split', kvCache: 'f16' }, (c) => c === 'shortContext')).toMatchObject({ file: 'attention/tiled.wgsl', slots: { kv_cache: expect.stringMatching(/kv_cache_f16\.wgsl$/) } });
  });

  it("resolves every kernel of every plan's listing: each include found, each slot bound and used", () => {
    const values = <K extends keyof typeof PLAN_CHOICES>(k: K) => PLAN_CHOICES[k] as readonly KernelPlan[K][];
    for (const device of [lavapipe, gpuWithout]) {
      for (const matvec of values('matvec')) for (const gemm of values('gemm')) for (const fuse of values('fuse')) for (const kvCache of values('kvCache')) {
        if (device === gpuWithout && (matvec === 'subgroup' || gemm === 'broadcast')) continue;
        const plan = resolvePlan(device, { matvec, gemm, fuse, kvCache, attention: 'split', prefillAttention: 'flash' }, '');
        expect(() => describeKernels(plan, device)).not.toThrow();
      }
    }
  });

  it("declares each file's CAPACITY in the modules that include it, and refuses a tile past it", () => {
    const plan = resolvePlan(lavapipe, {}, '');
    const k = productKernel('matmul', { dtype: 'f16', cols: 4096 }, 'token', plan, lavapipe);
    const code = kernelModule(k).code;
    expect(code).toContain(`const MAX_ROWS = ${CAPACITY['matmul/matvec_rows.wgsl']!.MAX_ROWS![0]}u;`);
    expect(code.indexOf('const MAX_ROWS')).toBeLessThan(code.indexOf('override ROWS'));
    const lanes = productKernel('swiglu', { dtype: 'q4', cols: 4096 }, 'token', resolvePlan(gpu, {}, ''), gpu);
    expect(kernelModule(lanes).code).toContain(`const MAX_TOKENS = ${MATVEC_MAX_TOKENS}u;`);
    const rows = CAPACITY['matmul/matvec_rows.wgsl']!.MAX_ROWS![0];
    expect(() => kernelModule({ ...k, constants: { ...k.constants, ROWS: rows + 1 } })).toThrow(
      new RegExp(`ROWS=${rows + 1}, past matmul/matvec_rows.wgsl's MAX_ROWS = ${rows}`),
    );
  });
});
