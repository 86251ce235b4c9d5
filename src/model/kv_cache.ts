/**
 * The key/value cache on the device, one pair of buffers per layer:
 * [slots, num_key_value_heads, head_dim], stored as f32 or as f16 (`dtype`, chosen
 * once at load; the kernels widen f16 to f32 as they read it, see kv_cache_f16.wgsl).
 *
 * With a sliding window W (Mistral) this is the paper's rolling buffer: position
 * p lives in slot p % W, so memory stays W slots per layer however long the
 * conversation runs. Without one (Llama) there is a slot per position of the context.
 */
import type { Gpu } from '../gpu/device.ts';
import { createStorageBuffer } from '../gpu/buffers.ts';
import type { ModelConfig } from './config.ts';
import { kvBytesPerElement, type KvCacheDtype } from '../kernels/kv_cache.ts';

export class KVCache {
  readonly slots: number;
  readonly keys: GPUBuffer[] = [];
  readonly values: GPUBuffer[] = [];
  /** Token ids whose keys and values are in the cache, at positions 0..tokens.length-1. */
  private tokens: number[] = [];

  /** Bytes of one slot (one position's keys, or its values) of one layer, stored as `dtype`. */
  static slotBytes(config: ModelConfig, dtype: KvCacheDtype): number {
    return config.num_key_value_heads * config.head_dim * kvBytesPerElement(dtype);
  }

  constructor(gpu: Gpu, readonly config: ModelConfig, contextLength: number, readonly dtype: KvCacheDtype) {
    this.slots = config.sliding_window === null ? contextLength : Math.min(config.sliding_window, contextLength);
    const bytes = this.slots * KVCache.slotBytes(config, dtype);
    for (let i = 0; i < config.num_hidden_layers; i++) {
      this.keys.push(createStorageBuffer(gpu, bytes, `layers.${i}.k_cache`));
      this.values.push(createStorageBuffer(gpu, bytes, `layers.${i}.v_cache`));
    }
  }

  get length(): number {
    return this.tokens.length;
  }

  get bytes(): number {
    return 2 * this.keys.length * this.slots * KVCache.slotBytes(this.config, this.dtype);
  }

  /**
   * How many leading tokens of `ids` can be kept when the cache is rewound for
   * them. Rewinding to L is sound only if the keys a query at position L needs
   * (max(0, L - W + 1) .. L - 1) were not overwritten by later positions of the
   * old sequence in the rolling buffer.
   */
  reusablePrefix(ids: readonly number[]): number {
    let L = 0;
    const max = Math.min(ids.length, this.tokens.length);
    while (L < max && ids[L] === this.tokens[L]) L++;
    // Leave at least one token to run: the caller needs its logits.
    if (L === ids.length) L--;
    const window = this.config.sliding_window ?? Infinity;
    const N = this.tokens.length;
    // Shrinking L only needs older keys still, so when L fails, every shorter prefix fails too.
    if (Math.max(0, L - window + 1) < N - this.slots) return 0;
    return Math.max(0, L);
  }

  /** Records that `ids` were written at the next positions (one by one: a spread of a long list overflows the stack). */
  append(ids: readonly number[]): void {
    for (const id of ids) this.tokens.push(id);
  }

  /** Drops every position from `length` on (their slots are simply overwritten later). */
  truncate(length: number): void {
    this.tokens.length = Math.min(length, this.tokens.length);
  }

  destroy(): void {
    for (const b of [...this.keys, ...this.values]) b.destroy();
  }
}
