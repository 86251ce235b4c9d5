import { describe, expect, it } from 'vitest';
import type { DeviceProfile } from '../gpu/profile.ts';
import { defaultPlan, formatPlan, parsePlan, resolvePlan, runnable } from './plan.ts';

const limits = {} as DeviceProfile['limits'];
const lavapipe: DeviceProfile = {
  kind: 'software', vendor: 'mesa', adapter: 'llvmpipe', subgroupSizes: { min: 8, max: 8 },
  features: { f16: true, subgroups: true, timestampQuery: true }, limits,
};
const gpuWithout: DeviceProfile = { ...lavapipe, kind: 'hardware', vendor: 'acme', adapter: 'Acme 9000', subgroupSizes: null, features: { f16: false, subgroups: false, timestampQuery: false } };
const gpuWith: DeviceProfile = { ...gpuWithout, subgroupSizes: { min: 32, max: 32 }, features: { f16: false, subgroups: true, timestampQuery: true } };

describe('kernel plan', () => {
  it("keeps today's kernels on a software adapter and picks the GPU matvec on hardware", () => {
    expect(defaultPlan(lavapipe)).toEqual({ matvec: 'rows', gemm: 'broadcast', fuse: 'qkv', attention: 'tiled', prefillAttention: 'tiled', kvCache: 'f32', submitLayers: 0, prefillChunk: 128 });
    expect(defaultPlan({ ...lavapipe, subgroupSizes: null }).gemm).toBe('regtile');
    expect(defaultPlan(gpuWith).matvec).toBe('subgroup');
    expect(defaultPlan(gpuWithout).matvec).toBe('workgroup');
  });

  it('takes OPENCHAT_KERNELS over the default, and what the caller forces over both', () => {
    expect(resolvePlan(lavapipe, {}, 'matvec=workgroup, submitLayers=4').matvec).toBe('workgroup');
    expect(resolvePlan(lavapipe, { matvec: 'subgroup' }, 'matvec=workgroup')).toMatchObject({ matvec: 'subgroup', submitLayers: 0 });
    expect(resolvePlan(lavapipe, {}, 'submitLayers=4').submitLayers).toBe(4);
  });

  it('prints in the override syntax, so a printed plan parses back', () => {
    const plan = resolvePlan(gpuWith, {}, '');
    expect(resolvePlan(gpuWith, {}, formatPlan(plan))).toEqual(plan);
    expect(formatPlan(plan)).toBe('matvec=subgroup,gemm=tiled,fuse=norm+qkv,attention=split,prefillAttention=flash,kvCache=f32,submitLayers=4,prefillChunk=512');
  });

  it('refuses unknown keys and values with the allowed ones', () => {
    expect(() => parsePlan('matvek=rows')).toThrow(/unknown key 'matvek'.*matvec, gemm, fuse, attention, prefillAttention, kvCache, submitLayers, prefillChunk/);
    expect(() => parsePlan('matvec=fast')).toThrow(/matvec=fast is not a variant; matvec is one of rows, subgroup, workgroup/);
    expect(() => parsePlan('matvec')).toThrow(/matvec=\(empty\)/);
    expect(() => parsePlan('submitLayers=-1')).toThrow(/whole number/);
    expect(() => parsePlan('prefillChunk=0')).toThrow(/prefillChunk must be a whole number of tokens, at least 1; got '0'/);
    expect(parsePlan('prefillChunk=256')).toEqual({ prefillChunk: 256 });
    expect(() => resolvePlan(lavapipe, { prefillChunk: 0.5 }, undefined)).toThrow(/prefillChunk/);
  });

  it('refuses a variant the device cannot run, naming the feature', () => {
    expect(() => resolvePlan(gpuWithout, {}, 'matvec=subgroup')).toThrow(/OPENCHAT_KERNELS: matvec=subgroup needs the WebGPU 'subgroups' feature.*Acme 9000/);
    expect(() => resolvePlan(gpuWithout, { matvec: 'subgroup' }, undefined)).toThrow(/subgroups/);
    expect(runnable(gpuWithout, 'matvec')).toEqual(['rows', 'workgroup']);
    expect(runnable(lavapipe, 'matvec')).toEqual(['rows', 'subgroup', 'workgroup']);
    expect(runnable(lavapipe, 'gemm')).toEqual(['regtile', 'broadcast', 'tiled']);
    expect(runnable(gpuWithout, 'gemm')).toEqual(['regtile', 'tiled']);
    expect(() => resolvePlan({ ...gpuWith, subgroupSizes: { min: 4, max: 64 } }, { gemm: 'broadcast' }, undefined)).toThrow(/gemm=broadcast needs subgroups of at least 8 lanes.*4\.\.64/);
  });

  it('takes the fusion of the decode dispatches as a key, on by default on hardware', () => {
    expect(resolvePlan(lavapipe, {}, 'fuse=norm+qkv').fuse).toBe('norm+qkv');
    expect(resolvePlan(gpuWith, { fuse: 'none' }, 'fuse=qkv').fuse).toBe('none');
    expect(defaultPlan(gpuWithout).fuse).toBe('norm+qkv');
    expect(runnable(lavapipe, 'fuse')).toEqual(['none', 'qkv', 'norm+qkv']);
    expect(() => parsePlan('fuse=norm')).toThrow(/fuse is one of none, qkv, norm\+qkv/);
  });

  it('takes the attention strategy and KV cache format as keys too', () => {
    expect(resolvePlan(lavapipe, {}, 'attention=split,kvCache=f16')).toMatchObject({ attention: 'split', kvCache: 'f16' });
    expect(defaultPlan(gpuWith).attention).toBe('split');
    expect(() => parsePlan('kvCache=bf16')).toThrow(/kvCache is one of f32, f16/);
  });
});
