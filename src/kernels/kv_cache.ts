/**
 * The KV cache's storage format on the device, shared by the kernels that read
 * it (attention) and write it (kv_write): f32, or f16 halves two per u32 word
 * (f32 math either way). Chosen once at model load.
 */
import { shaderSource, wgsl, type ShaderSource } from '../gpu/encoder.ts';
import { decodeToF32, f16ToF32, f32ToF16 } from '../util/half.ts';

export type KvCacheDtype = 'f32' | 'f16';

export const KV_CACHE_DTYPES: readonly KvCacheDtype[] = ['f32', 'f16'];

export function kvBytesPerElement(dtype: KvCacheDtype): number {
  return dtype === 'f32' ? 4 : 2;
}

const sources = new Map<string, ShaderSource>();

/**
 * A kernel's source preceded by the storage format's snippet (kv_cache_f32.wgsl or
 * kv_cache_f16.wgsl) and then by `snippets` (files beside `base`, in order), made once per
 * (dtype, snippets, file): a dispatch's pipeline lookup then neither concatenates nor hashes
 * the source.
 */
export function kvKernelSource(dtype: KvCacheDtype, file: string, base: string, snippets: readonly string[] = []): ShaderSource {
  const key = `${dtype}|${base}|${snippets.join(',')}|${file}`;
  let s = sources.get(key);
  if (!s) {
    const parts = [wgsl(`kv_cache_${dtype}.wgsl`, import.meta.url), ...snippets.map((f) => wgsl(f, base)), wgsl(file, base)];
    s = shaderSource(parts.join('\n'));
    sources.set(key, s);
  }
  return s;
}

/** Cache contents read back from the device (raw bytes) as f32 values, for tests and checks. */
export function decodeKvCache(bytes: ArrayBuffer, dtype: KvCacheDtype): Float32Array {
  return decodeToF32(new Uint8Array(bytes), dtype);
}

/** A value as an f16 cache holds it (round to nearest even), for references. */
export function roundLikeKvCache(x: number, dtype: KvCacheDtype): number {
  return dtype === 'f32' ? x : f16ToF32(f32ToF16(x));
}
