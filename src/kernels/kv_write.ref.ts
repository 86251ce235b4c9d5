/**
 * The KV-cache write, plainly: row t of the chunk goes to slot (pos0 + t) % slots.
 * Updates `cache` ([slots, rowLen], the values as the cache holds them) in place, in order,
 * so later rows win a shared slot. An f16 cache rounds each value to nearest even.
 */
import { roundLikeKvCache, type KvCacheDtype } from './kv_cache.ts';

export function kvWriteRef(
  cache: Float32Array,
  chunk: Float32Array,
  tokens: number,
  pos0: number,
  rowLen: number,
  slots: number,
  dtype: KvCacheDtype = 'f32',
): void {
  for (let t = 0; t < tokens; t++) {
    const slot = (pos0 + t) % slots;
    for (let i = 0; i < rowLen; i++) cache[slot * rowLen + i] = roundLikeKvCache(chunk[t * rowLen + i]!, dtype);
  }
}
