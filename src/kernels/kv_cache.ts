/**
 * The KV cache's storage format on the device, shared by the kernels that read
 * it (attention) and write it (kv_write): f32, or f16 halves two per u32 word
 * (f32 math either way). Chosen once at model load.
 */
import type { WgslSlots } from '../gpu/encoder.ts';
import { decodeToF32, f16ToF32, f32ToF16 } from '../util/half.ts';

export type KvCacheDtype = 'f32' | 'f16';

export const KV_CACHE_DTYPES: readonly KvCacheDtype[] = ['f32', 'f16'];

export function kvBytesPerElement(dtype: KvCacheDtype): number {
  return dtype === 'f32' ? 4 : 2;
}

/**
 * The `<kv_cache>` slot of the kernels that read or write the cache (kv_write.wgsl, the attention
 * kernels): the storage format's file, kv_cache_f32.wgsl or kv_cache_f16.wgsl, as a URL (so that
 * it holds from any wrapper's folder).
 */
export function kvCacheSlots(dtype: KvCacheDtype): WgslSlots {
  return { kv_cache: new URL(`kv_cache_${dtype}.wgsl`, import.meta.url).href };
}

/** Cache contents read back from the device (raw bytes) as f32 values, for tests and checks. */
export function decodeKvCache(bytes: ArrayBuffer, dtype: KvCacheDtype): Float32Array {
  return decodeToF32(new Uint8Array(bytes), dtype);
}

/** A value as an f16 cache holds it (round to nearest even), for references. */
export function roundLikeKvCache(x: number, dtype: KvCacheDtype): number {
  return dtype === 'f32' ? x : f16ToF32(f32ToF16(x));
}
