/**
 * What the weight-reading kernels share: the DTYPE override code of each
 * storage format, and their WGSL source with weights.wgsl (the widening
 * functions) prepended, since WGSL has no #include.
 */
import { shaderSource, wgsl, type ShaderSource } from '../gpu/encoder.ts';
import type { WeightDType } from '../gpu/buffers.ts';

/** The DTYPE override constant of weights.wgsl for a storage format. */
export function dtypeCode(dtype: WeightDType): number {
  return dtype === 'f32' ? 0 : dtype === 'f16' ? 1 : 2;
}

const made = new Map<string, ShaderSource>();

/**
 * The source of kernel `file` (beside `base`, a module's import.meta.url), preceded by
 * `snippets` (files beside `base` too, in order) and weights.wgsl. Made once per combination.
 */
export function weightKernelSource(file: string, base: string = import.meta.url, snippets: string[] = []): ShaderSource {
  const key = `${base}|${snippets.join(',')}|${file}`;
  let s = made.get(key);
  if (!s) {
    // `enable` directives must open the module, so snippets (which may hold one) come first.
    const parts = [...snippets.map((f) => wgsl(f, base)), wgsl('weights.wgsl', import.meta.url), wgsl(file, base)];
    s = shaderSource(parts.join('\n'));
    made.set(key, s);
  }
  return s;
}
