/** Test helpers for the KV cache's storage formats (used by the kv_write and attention tests). */
import type { Gpu } from '../gpu/device.ts';
import type { KvCacheDtype } from './kv_cache.ts';

/** NaN in every element of the cache's format (an f32 NaN word would leave every other f16 a zero). */
export function poisonKvCache(gpu: Gpu, buffer: GPUBuffer, dtype: KvCacheDtype): void {
  gpu.device.queue.writeBuffer(buffer, 0, new Uint32Array(buffer.size / 4).fill(dtype === 'f32' ? 0x7fc00000 : 0x7e007e00));
}
