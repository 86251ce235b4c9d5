/**
 * What the weight-reading kernels share: the DTYPE override code of each
 * storage format, and their WGSL source with weights.wgsl (the widening
 * functions) prepended, since WGSL has no #include.
 */
import { wgsl } from '../gpu/encoder.ts';
import type { WeightDType } from '../gpu/buffers.ts';

/** The DTYPE override constant of weights.wgsl for a storage format. */
export function dtypeCode(dtype: WeightDType): number {
  return dtype === 'f32' ? 0 : dtype === 'f16' ? 1 : 2;
}

/** The source of a kernel file in this folder, preceded by weights.wgsl. */
export function weightKernelSource(file: string): string {
  return wgsl('weights.wgsl', import.meta.url) + '\n' + wgsl(file, import.meta.url);
}
