/**
 * Grouped-query causal self-attention with a sliding window, on the device
 * (the softmax(q k^T / sqrt(d)) v core of Mistral's `MistralAttention`; the
 * projections and RoPE are separate kernels).
 *
 * Two strategies, chosen once at model load, exact to the same reference (attention.ref.ts):
 *  - `tiled` (tiled.wgsl): one workgroup per KV head and block of 4 query heads walks all of
 *    their keys. Few workgroups, no second pass: the fastest on lavapipe, where a handful of
 *    workgroups already keeps every CPU core busy.
 *  - `split` (split.wgsl, "flash-decoding"): for decode, the keys are cut into segments walked
 *    by separate workgroups, and a small reduce dispatch merges their partial softmaxes, so a
 *    long context fills a large GPU. Prefill chunks (tokens > 1), and contexts too short to be
 *    worth splitting, run the tiled kernel.
 * The KV cache may be f32 or f16 (`kvCache`); both strategies read both.
 *
 * Keys and values of the chunk itself are read from kNew/vNew, so the caller runs
 * `attention` first and `kvWrite` after: a chunk longer than the rolling cache
 * would otherwise overwrite keys its own early tokens still need.
 */
import type { Gpu } from '../../gpu/device.ts';
import { createStorageBuffer } from '../../gpu/buffers.ts';
import { Encoder, getPipeline, params, type Binding } from '../../gpu/encoder.ts';
import { kvKernelSource, type KvCacheDtype } from '../kv_cache.ts';

export type AttentionStrategy = 'tiled' | 'split';
export const ATTENTION_STRATEGIES: readonly AttentionStrategy[] = ['tiled', 'split'];

const HEADS_PER_WORKGROUP = 4; // HG in tiled.wgsl and split.wgsl
const WORKGROUP = 64; // WG in split.wgsl: keys per tile
/**
 * Workgroups the split strategy aims for: about two per SM of a 132-SM H100/H200, so that
 * every SM has one to run while the other waits on memory.
 */
const SPLIT_TARGET_WORKGROUPS = 264;
/** Fewest keys per segment: one tile of the split kernel. Below two segments' worth, one pass. */
const MIN_SEGMENT_KEYS = WORKGROUP;
/** Segments a partials buffer holds by default (at 7B: 256 x 32 heads x 128 x 4 B = 4 MiB). */
export const MAX_SEGMENTS = 256;

export interface AttentionArgs {
  q: Binding;
  kNew: Binding;
  vNew: Binding;
  kCache: Binding;
  vCache: Binding;
  out: Binding;
  tokens: number;
  /** Absolute position of the chunk's first token. */
  pos0: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Rows of the rolling cache; position j lives in slot j % slots. */
  slots: number;
  /** Mistral's sliding_window: each query sees this many keys including its own; 0 = unlimited. */
  window: number;
  strategy: AttentionStrategy;
  /** Storage format of kCache / vCache. */
  kvCache: KvCacheDtype;
  /** Scratch for the split strategy's partial results (createAttentionPartials). */
  partials?: AttentionPartials;
  /** Split strategy: keys per segment, instead of the choice for a large GPU (tests, benchmarks). */
  segmentKeys?: number;
}

/** Scratch for the split strategy: per segment and query head, the partial output and (max, sum). */
export interface AttentionPartials {
  o: GPUBuffer; // [maxSegments, heads, headDim] f32
  ml: GPUBuffer; // [maxSegments, heads] vec2<f32>
  heads: number;
  headDim: number;
  maxSegments: number;
}

export function createAttentionPartials(gpu: Gpu, heads: number, headDim: number, maxSegments = MAX_SEGMENTS): AttentionPartials {
  return {
    o: createStorageBuffer(gpu, maxSegments * heads * headDim * 4, 'attention-partials-o'),
    ml: createStorageBuffer(gpu, maxSegments * heads * 8, 'attention-partials-ml'),
    heads,
    headDim,
    maxSegments,
  };
}

export function destroyAttentionPartials(p: AttentionPartials): void {
  p.o.destroy();
  p.ml.destroy();
}

/**
 * How the split strategy cuts `keys` keys for a decode step: `segments` segments of `segLen`
 * keys (the last shorter), or a single segment when the context is too short to be worth it.
 */
export function splitSegments(keys: number, workgroupsPerSegment: number, segmentKeys?: number): { segments: number; segLen: number } {
  if (segmentKeys !== undefined) {
    if (!Number.isInteger(segmentKeys) || segmentKeys < 1) throw new Error(`attention: segmentKeys must be a positive integer, got ${segmentKeys}`);
    return { segments: Math.ceil(keys / segmentKeys), segLen: segmentKeys };
  }
  const wanted = Math.ceil(SPLIT_TARGET_WORKGROUPS / workgroupsPerSegment);
  const segments = Math.min(wanted, Math.floor(keys / MIN_SEGMENT_KEYS), MAX_SEGMENTS);
  if (segments <= 1) return { segments: 1, segLen: keys };
  const segLen = Math.ceil(keys / segments);
  return { segments: Math.ceil(keys / segLen), segLen };
}

export function attention(enc: Encoder, a: AttentionArgs): void {
  if (a.tokens === 0) return;
  if (a.headDim % 4 !== 0 || a.headDim > 256) {
    throw new Error(`attention: headDim must be a multiple of 4 and at most 256, got ${a.headDim}`);
  }
  if (a.kvHeads < 1 || a.heads % a.kvHeads !== 0) {
    throw new Error(`attention: heads (${a.heads}) must be a multiple of kvHeads (${a.kvHeads})`);
  }
  // Every past key a query can see must still be in the cache: the oldest one the first
  // query needs is at max(0, pos0 - window + 1), so the cache must reach back that far.
  const pastNeeded = a.window > 0 ? Math.min(a.pos0, a.window - 1) : a.pos0;
  if (a.slots < Math.max(1, pastNeeded)) {
    throw new Error(`attention: a cache of ${a.slots} slots cannot hold the ${pastNeeded} past keys position ${a.pos0} needs`);
  }
  // Each workgroup serves up to HEADS_PER_WORKGROUP query heads of one KV head.
  const headBlocks = Math.ceil(a.heads / a.kvHeads / HEADS_PER_WORKGROUP);
  const scale = { f32: 1 / Math.sqrt(a.headDim) };

  if (a.strategy === 'split' && a.tokens === 1) {
    const keys = a.window > 0 ? Math.min(a.pos0 + 1, a.window) : a.pos0 + 1;
    const { segments, segLen } = splitSegments(keys, a.kvHeads * headBlocks, a.segmentKeys);
    if (segments > 1 || a.segmentKeys !== undefined) {
      const part = a.partials;
      if (!part) throw new Error('attention: the split strategy needs a partials buffer (createAttentionPartials)');
      if (part.heads !== a.heads || part.headDim !== a.headDim || segments > part.maxSegments) {
        throw new Error(
          `attention: partials made for ${part.maxSegments} segments of ${part.heads} heads x ${part.headDim} cannot hold ` +
            `${segments} segments of ${a.heads} x ${a.headDim}`,
        );
      }
      const code = kvKernelSource(a.kvCache, 'split.wgsl', import.meta.url);
      const uniforms = params([a.pos0, a.heads, a.kvHeads, a.headDim, a.slots, a.window, scale, headBlocks, segments, segLen]);
      const main = getPipeline(enc.gpu, code, 'main', {}, `attention_split_${a.kvCache}`);
      enc.dispatch(main, uniforms, [a.q, a.kNew, a.vNew, a.kCache, a.vCache, part.o, part.ml], [a.kvHeads * headBlocks, segments]);
      const reduce = getPipeline(enc.gpu, code, 'reduce', {}, `attention_split_reduce_${a.kvCache}`);
      enc.dispatch(reduce, uniforms, [part.o, part.ml, a.out], [a.heads]);
      return;
    }
  }

  const pipeline = getPipeline(enc.gpu, kvKernelSource(a.kvCache, 'tiled.wgsl', import.meta.url), 'main', {}, `attention_tiled_${a.kvCache}`);
  const uniforms = params([a.tokens, a.pos0, a.heads, a.kvHeads, a.headDim, a.slots, a.window, scale, headBlocks]);
  enc.dispatch(pipeline, uniforms, [a.q, a.kNew, a.vNew, a.kCache, a.vCache, a.out], [a.kvHeads * headBlocks, a.tokens]);
}
