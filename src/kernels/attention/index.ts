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
 *    long context fills a large GPU. Contexts too short to be worth splitting run the tiled
 *    kernel (splitsDecode decides from the token's own position), and prefill chunks the
 *    prefill strategy below.
 * A prefill step's chunks (any length) have their own choice (`prefill`, plan.prefillAttention):
 *  - `tiled`: the kernel above, one workgroup per query token, so every key and value is read
 *    once per token of the chunk.
 *  - `flash` (flash.wgsl): a workgroup takes FLASH_TILES.BT tokens x FLASH_TILES.HB query heads
 *    of one KV head and stages key/value tiles in workgroup memory, read once for all of them;
 *    tiles outside the causal mask or the window are never visited. Heads wider than
 *    FLASH_MAX_HEAD_DIM run the tiled kernel.
 * The KV cache may be f32 or f16 (`kvCache`); every strategy reads both.
 *
 * Keys and values of the chunk itself are read from kNew/vNew (rounded as the cache stores
 * them, kvRound), so the caller runs `attention` first and `kvWrite` after: a chunk longer than
 * the rolling cache would otherwise overwrite keys its own early tokens still need. A step's
 * rows may hold several sequences: `row0` is where the chunk's rows start in q, kNew, vNew and
 * out, `seq` the sequence's region of the KV-cache pool.
 */
import type { Gpu } from '../../gpu/device.ts';
import { createStorageBuffer } from '../../gpu/buffers.ts';
import { Encoder, getPipeline, kernelSource, UniformLayout, type Binding } from '../../gpu/encoder.ts';
import type { KvCacheDtype } from '../kv_cache.ts';
import type { BatchRowsArg } from '../batch_rows.ts';
import type { AttentionStrategy, PrefillAttentionStrategy } from '../plan.ts';
import { ATTENTION_TILES, attentionKernel, FLASH_MAX_HEAD_DIM, FLASH_TILES, kernelModule, type AttentionShape, type Kernel } from '../table.ts';

// The plan's and the table's, for this module's callers.
export { ATTENTION_STRATEGIES, PREFILL_ATTENTION_STRATEGIES, type AttentionStrategy, type PrefillAttentionStrategy } from '../plan.ts';
export { ATTENTION_TILES, FLASH_MAX_HEAD_DIM, FLASH_TILES } from '../table.ts';

/** tiled.wgsl's and flash.wgsl's Params, declared once for both in chunk.wgsl. */
const CHUNK_PARAMS = new UniformLayout({
  tokens: 'u32', pos0: 'u32', heads: 'u32', kvHeads: 'u32', headDim: 'u32', slots: 'u32', window: 'u32', scale: 'f32', headBlocks: 'u32',
  row0: 'u32', region: 'u32',
});
const SPLIT_PARAMS = new UniformLayout({
  pos0: 'u32', heads: 'u32', kvHeads: 'u32', headDim: 'u32', slots: 'u32', window: 'u32', scale: 'f32', headBlocks: 'u32', segments: 'u32', segLen: 'u32',
  row0: 'u32', region: 'u32',
});
/**
 * Workgroups the split strategy aims for: about two per SM of a 132-SM H100/H200, so that
 * every SM has one to run while the other waits on memory.
 */
const SPLIT_TARGET_WORKGROUPS = 264;
/** Fewest keys per segment: one tile of the split kernel. Below two segments' worth, one pass. */
const MIN_SEGMENT_KEYS = ATTENTION_TILES.WG;
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
  /** Rows of the rolling cache per sequence; position j lives in slot j % slots. */
  slots: number;
  /** The chunk's first row in q, kNew, vNew and out (default 0): a step's rows hold several sequences. */
  row0?: number;
  /** The sequence's region of the KV-cache pool (default 0): its keys are in pool rows seq * slots ... */
  seq?: number;
  /** Mistral's sliding_window: each query sees this many keys including its own; 0 = unlimited. */
  window: number;
  strategy: AttentionStrategy;
  /**
   * A prefill step's chunk (of any length, one token included) runs this strategy, so a prompt
   * token's result does not depend on how the prompt was chunked. Without it the chunk is a
   * decode step's: one token under `strategy`, or (tests) several through tiled.wgsl.
   */
  prefill?: PrefillAttentionStrategy;
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

/**
 * Throws unless the kernels can take this head shape (`op` names the caller in the message);
 * returns how many workgroups of `headsPerWorkgroup` query heads each KV head's group needs.
 */
function headBlocksOf(op: string, a: { heads: number; kvHeads: number; headDim: number }, headsPerWorkgroup: number): number {
  if (a.headDim % 4 !== 0 || a.headDim > 256) {
    throw new Error(`${op}: headDim must be a multiple of 4 and at most 256, got ${a.headDim}`);
  }
  if (a.kvHeads < 1 || a.heads % a.kvHeads !== 0) {
    throw new Error(`${op}: heads (${a.heads}) must be a multiple of kvHeads (${a.kvHeads})`);
  }
  return Math.ceil(a.heads / a.kvHeads / headsPerWorkgroup);
}

/** The pipeline of the table's kernel `k` at `entry` (its first by default), labelled attention_<variant>[_<entry>]_<format>. */
function pipelineOf(enc: Encoder, k: Kernel, layout: { check(code: string): void }, kvCache: KvCacheDtype, entry = k.entries[0]!): GPUComputePipeline {
  const label = `attention_${k.variant}${entry === k.entries[0] ? '' : `_${entry}`}_${kvCache}`;
  return getPipeline(enc.gpu, kernelSource(kernelModule(k), layout), entry, k.constants, label);
}

export function attention(enc: Encoder, a: AttentionArgs): void {
  if (a.tokens === 0) return;
  // Each workgroup serves up to ATTENTION_TILES.HG query heads of one KV head.
  const headBlocks = headBlocksOf('attention', a, ATTENTION_TILES.HG);
  // Every past key a query can see must still be in the cache: the oldest one the first
  // query needs is at max(0, pos0 - window + 1), so the cache must reach back that far.
  const pastNeeded = a.window > 0 ? Math.min(a.pos0, a.window - 1) : a.pos0;
  if (a.slots < Math.max(1, pastNeeded)) {
    throw new Error(`attention: a cache of ${a.slots} slots cannot hold the ${pastNeeded} past keys position ${a.pos0} needs`);
  }
  const scale = 1 / Math.sqrt(a.headDim);
  const rows = { row0: a.row0 ?? 0, region: (a.seq ?? 0) * a.slots };
  const shape: AttentionShape = a.prefill !== undefined ? 'prefill' : a.tokens === 1 ? 'decode' : 'chunk';
  const k = attentionKernel(shape, { attention: a.strategy, prefillAttention: a.prefill, kvCache: a.kvCache }, (c) =>
    c === 'shortContext' ? !splitsDecode(a) : c === 'wideHeads' && a.headDim > FLASH_MAX_HEAD_DIM,
  );

  if (k.variant === 'flash') {
    const blocks = Math.ceil(a.heads / a.kvHeads / FLASH_TILES.HB);
    const uniforms = CHUNK_PARAMS.pack({
      tokens: a.tokens, pos0: a.pos0, heads: a.heads, kvHeads: a.kvHeads, headDim: a.headDim, slots: a.slots, window: a.window, scale, headBlocks: blocks, ...rows,
    });
    enc.dispatch(pipelineOf(enc, k, CHUNK_PARAMS, a.kvCache), uniforms, [a.q, a.kNew, a.vNew, a.kCache, a.vCache, a.out], [a.kvHeads * blocks, Math.ceil(a.tokens / FLASH_TILES.BT)]);
    return;
  }

  if (k.variant === 'split') {
    const keys = a.window > 0 ? Math.min(a.pos0 + 1, a.window) : a.pos0 + 1;
    const { segments, segLen } = splitSegments(keys, a.kvHeads * headBlocks, a.segmentKeys);
    const part = a.partials;
    if (!part) throw new Error('attention: the split strategy needs a partials buffer (createAttentionPartials)');
    if (part.heads !== a.heads || part.headDim !== a.headDim || segments > part.maxSegments) {
      throw new Error(
        `attention: partials made for ${part.maxSegments} segments of ${part.heads} heads x ${part.headDim} cannot hold ` +
          `${segments} segments of ${a.heads} x ${a.headDim}`,
      );
    }
    const uniforms = SPLIT_PARAMS.pack({
      pos0: a.pos0, heads: a.heads, kvHeads: a.kvHeads, headDim: a.headDim, slots: a.slots, window: a.window, scale, headBlocks, segments, segLen, ...rows,
    });
    enc.dispatch(pipelineOf(enc, k, SPLIT_PARAMS, a.kvCache), uniforms, [a.q, a.kNew, a.vNew, a.kCache, a.vCache, part.o, part.ml], [a.kvHeads * headBlocks, segments]);
    enc.dispatch(pipelineOf(enc, k, SPLIT_PARAMS, a.kvCache, 'reduce'), uniforms, [part.o, part.ml, a.out], [a.heads]);
    return;
  }

  const uniforms = CHUNK_PARAMS.pack({
    tokens: a.tokens, pos0: a.pos0, heads: a.heads, kvHeads: a.kvHeads, headDim: a.headDim, slots: a.slots, window: a.window, scale, headBlocks, ...rows,
  });
  enc.dispatch(pipelineOf(enc, k, CHUNK_PARAMS, a.kvCache), uniforms, [a.q, a.kNew, a.vNew, a.kCache, a.vCache, a.out], [a.kvHeads * headBlocks, a.tokens]);
}

/**
 * Whether `attention` splits the keys of a decode token at `pos0` (strategy split, a context long
 * enough): a function of the token's own position, never of what else runs beside it.
 */
export function splitsDecode(a: Pick<AttentionArgs, 'pos0' | 'window' | 'heads' | 'kvHeads' | 'headDim' | 'strategy' | 'segmentKeys'>): boolean {
  if (a.strategy !== 'split') return false;
  if (a.segmentKeys !== undefined) return true;
  const keys = a.window > 0 ? Math.min(a.pos0 + 1, a.window) : a.pos0 + 1;
  return splitSegments(keys, a.kvHeads * headBlocksOf('attention', a, ATTENTION_TILES.HG)).segments > 1;
}

/**
 * Attention for a batched decode step (continuous batching): row t of q is one token of its own
 * sequence at the batch descriptor's batchRows[t] = (pos, seq) (kernels/batch_rows.ts).
 * tiled.wgsl's `decode_rows` entry: each row's past keys from its sequence's region of the pool
 * (cache rows seq * slots ..), its own key from row t of kNew / vNew, walked exactly as
 * `attention` with the tiled strategy walks one sequence's decode token, so a row gets those
 * bits whatever else is in the step. Like `attention`, it runs before the step's keys are
 * written (kvWriteRows).
 * `row0`: the first of the `tokens` consecutive rows it attends (the model lays a decode step's
 * rows whose keys split, splitsDecode, after these: those run `attention` one by one).
 */
export function decodeAttentionRows(
  enc: Encoder,
  a: Omit<AttentionArgs, 'pos0' | 'seq' | 'strategy' | 'prefill' | 'partials' | 'segmentKeys'> & BatchRowsArg,
): void {
  if (a.tokens === 0) return;
  const headBlocks = headBlocksOf('attention', a, ATTENTION_TILES.HG);
  const k = attentionKernel('decodeRows', { kvCache: a.kvCache }, () => false);
  // tokens and pos0 are the descriptor's, per row.
  const uniforms = CHUNK_PARAMS.pack({
    tokens: a.tokens, pos0: 0, heads: a.heads, kvHeads: a.kvHeads, headDim: a.headDim, slots: a.slots, window: a.window, scale: 1 / Math.sqrt(a.headDim), headBlocks,
    row0: a.row0 ?? 0, region: 0,
  });
  enc.dispatch(pipelineOf(enc, k, CHUNK_PARAMS, a.kvCache), uniforms, [a.q, a.kNew, a.vNew, a.kCache, a.vCache, a.out, a.batchRows], [a.kvHeads * headBlocks, a.tokens]);
}
