/**
 * Grouped-query causal self-attention with a sliding window, on the device
 * (the softmax(q k^T / sqrt(d)) v core of Mistral's `MistralAttention`; the
 * projections and RoPE are separate kernels).
 *
 * The same kernel serves decode (one query token against the cache) and prefill
 * (a chunk of query tokens that attend to the cache and to each other). Keys and
 * values of the chunk itself are read from kNew/vNew, so the caller runs
 * `attention` first and `kvWrite` after: a chunk longer than the rolling cache
 * would otherwise overwrite keys its own early tokens still need.
 */
import { Encoder, getPipeline, params, wgsl, type Binding } from '../gpu/encoder.ts';

const HEADS_PER_WORKGROUP = 4; // HG in attention.wgsl

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
  const pipeline = getPipeline(enc.gpu, wgsl('attention.wgsl', import.meta.url), 'main', {}, 'attention');
  // Each workgroup serves up to HEADS_PER_WORKGROUP query heads of one KV head (see attention.wgsl).
  const headBlocks = Math.ceil(a.heads / a.kvHeads / HEADS_PER_WORKGROUP);
  const uniforms = params([a.tokens, a.pos0, a.heads, a.kvHeads, a.headDim, a.slots, a.window, { f32: 1 / Math.sqrt(a.headDim) }, headBlocks]);
  enc.dispatch(pipeline, uniforms, [a.q, a.kNew, a.vNew, a.kCache, a.vCache, a.out], [a.kvHeads * headBlocks, a.tokens]);
}
