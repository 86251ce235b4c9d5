/**
 * The key/value cache on the device: a pool of `sequences` regions, one per sequence that may
 * run at once (continuous batching), in one pair of buffers per layer:
 * [sequences * slots, num_key_value_heads, head_dim], stored as f32 or as f16 (`dtype`, chosen
 * once at load; the kernels widen f16 to f32 as they read it, see kv_cache_f16.wgsl).
 * Position p of sequence c lives in row c * slots + p % slots.
 *
 * With a sliding window W (Mistral) each region is the paper's rolling buffer, so memory stays
 * bounded however long a conversation runs; without one (Llama) a region has a slot per
 * position of the context. A batched step writes its rows' keys before attention reads them
 * (kernels/attention/batched.wgsl), so a region also holds the `chunk` - 1 rows a prefill
 * chunk adds past its first row's window: slots = min(context, W + chunk - 1).
 *
 * Why regions, not pages: a region is the rolling buffer the attention kernels already walk
 * (no page table in their inner loop), and with a window every region has the same bounded
 * size, so pages would only pay off for unwindowed models with very uneven sequence lengths.
 *
 * The single-sequence path (MistralModel.forward) runs on region 0.
 */
import type { Gpu } from '../gpu/device.ts';
import { createStorageBuffer } from '../gpu/buffers.ts';
import type { ModelConfig } from './config.ts';
import { kvBytesPerElement, type KvCacheDtype } from '../kernels/kv_cache.ts';

export class KVCache {
  /** Slots per region (per sequence) and layer. */
  readonly slots: number;
  readonly keys: GPUBuffer[] = [];
  readonly values: GPUBuffer[] = [];
  /** Per region: token ids whose keys and values it holds, at positions 0..tokens.length-1. */
  private readonly tokens: number[][];
  /** copyRegion's stop on the way (a buffer cannot be copied onto itself); made on first use. */
  private staging: GPUBuffer | undefined;

  /** Bytes of one slot (one position's keys, or its values) of one layer, stored as `dtype`. */
  static slotBytes(config: ModelConfig, dtype: KvCacheDtype): number {
    return config.num_key_value_heads * config.head_dim * kvBytesPerElement(dtype);
  }

  /** Slots of one region: the window plus a batched step's chunk - 1, or the whole context without a window. */
  static regionSlots(config: ModelConfig, contextLength: number, chunk: number): number {
    return config.sliding_window === null ? contextLength : Math.min(config.sliding_window + chunk - 1, contextLength);
  }

  /** Device bytes of one region, keys and values of every layer. */
  static regionBytes(config: ModelConfig, contextLength: number, chunk: number, dtype: KvCacheDtype): number {
    return 2 * config.num_hidden_layers * KVCache.regionSlots(config, contextLength, chunk) * KVCache.slotBytes(config, dtype);
  }

  constructor(
    private readonly gpu: Gpu,
    readonly config: ModelConfig,
    contextLength: number,
    readonly dtype: KvCacheDtype,
    /** Regions: sequences that can hold keys at once. */
    readonly sequences = 1,
    /** Most rows one sequence adds in one batched step. */
    chunk = 1,
  ) {
    if (!Number.isInteger(sequences) || sequences < 1) throw new RangeError(`KVCache: sequences must be a positive integer, got ${sequences}`);
    this.slots = KVCache.regionSlots(config, contextLength, chunk);
    this.tokens = Array.from({ length: sequences }, () => []);
    const bytes = sequences * this.slots * KVCache.slotBytes(config, dtype);
    for (let i = 0; i < config.num_hidden_layers; i++) {
      this.keys.push(createStorageBuffer(gpu, bytes, `layers.${i}.k_cache`));
      this.values.push(createStorageBuffer(gpu, bytes, `layers.${i}.v_cache`));
    }
  }

  /** Bytes of one region of one layer's keys (or values): where region `seq` starts is seq times this. */
  get regionLayerBytes(): number {
    return this.slots * KVCache.slotBytes(this.config, this.dtype);
  }

  /** Positions region `seq` holds: the next one it runs. */
  length(seq = 0): number {
    return this.tokens[seq]!.length;
  }

  /** The tokens region `seq` holds. */
  held(seq: number): readonly number[] {
    return this.tokens[seq]!;
  }

  get bytes(): number {
    return 2 * this.keys.length * this.sequences * this.regionLayerBytes;
  }

  /**
   * How many leading tokens of `ids` region `seq` can keep when it is rewound for them.
   * Rewinding to L is sound only if the keys a query at position L needs
   * (max(0, L - W + 1) .. L - 1) were not overwritten by later positions of the
   * old sequence in the rolling buffer.
   */
  reusablePrefix(ids: readonly number[], seq = 0): number {
    const held = this.tokens[seq]!;
    let L = 0;
    const max = Math.min(ids.length, held.length);
    while (L < max && ids[L] === held[L]) L++;
    // Leave at least one token to run: the caller needs its logits.
    if (L === ids.length) L--;
    const window = this.config.sliding_window ?? Infinity;
    const N = held.length;
    // Shrinking L only needs older keys still, so when L fails, every shorter prefix fails too.
    if (Math.max(0, L - window + 1) < N - this.slots) return 0;
    return Math.max(0, L);
  }

  /** Records that `ids` were written at region `seq`'s next positions (one by one: a spread of a long list overflows the stack). */
  append(ids: readonly number[], seq = 0): void {
    const held = this.tokens[seq]!;
    for (const id of ids) held.push(id);
  }

  /** Drops every position of region `seq` from `length` on (their slots are simply overwritten later). */
  truncate(length: number, seq = 0): void {
    const held = this.tokens[seq]!;
    held.length = Math.min(length, held.length);
  }

  /**
   * Records on `encoder` a copy of region `from` into region `to` (every layer's keys and
   * values), and makes `to` hold what `from` holds: `n` > 1 choices of one prompt compute its
   * keys once and copy them to each choice's region on the device.
   */
  copyRegion(encoder: { copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void }, from: number, to: number): void {
    if (from === to) return;
    const size = this.regionLayerBytes;
    const staging = (this.staging ??= createStorageBuffer(this.gpu, size, 'kv_region_copy'));
    for (const b of [...this.keys, ...this.values]) {
      encoder.copy(b, from * size, staging, 0, size);
      encoder.copy(staging, 0, b, to * size, size);
    }
    this.tokens[to] = [...this.tokens[from]!];
  }

  destroy(): void {
    for (const b of [...this.keys, ...this.values]) b.destroy();
    this.staging?.destroy();
  }
}
