/**
 * Attention for a batched step (continuous batching): each row of the step carries its own
 * position and KV-cache region (the batch descriptor, kernels/batch_rows.ts), and reads every
 * key, its own included, from the pool after kvWriteRows stored the step's keys. See
 * batched.wgsl for the math and why a row's result never depends on the rest of its batch.
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, type Binding } from '../../gpu/encoder.ts';
import type { KvCacheDtype } from '../kv_cache.ts';
import { attentionSource, headBlocks as headBlocksOf } from './kernel.ts';

/**
 * batched.wgsl's override constants: WG invocations per workgroup (and keys per tile), HG query
 * heads of one KV head per workgroup (4: their scores travel as one vec4).
 */
const BATCHED_TILES = { WG: 64, HG: 4 } as const;
const PARAMS = new UniformLayout({ heads: 'u32', kvHeads: 'u32', headDim: 'u32', slots: 'u32', window: 'u32', scale: 'f32', headBlocks: 'u32' });

export interface BatchedAttentionArgs {
  q: Binding;
  kCache: Binding;
  vCache: Binding;
  /** The batch descriptor: vec2<u32> (pos, seq) per row, checked by writeBatchRows. */
  rows: Binding;
  out: Binding;
  tokens: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Cache rows per sequence: position j of sequence c is in row c * slots + j % slots. */
  slots: number;
  /** Mistral's sliding_window: each query sees this many keys including its own; 0 = unlimited. */
  window: number;
  kvCache: KvCacheDtype;
}

export function batchedAttention(enc: Encoder, a: BatchedAttentionArgs): void {
  if (a.tokens === 0) return;
  const headBlocks = headBlocksOf('batchedAttention', a, BATCHED_TILES.HG);
  const pipeline = getPipeline(enc.gpu, kernelSource(attentionSource(a.kvCache, 'batched.wgsl'), PARAMS), 'main', BATCHED_TILES, `attention_batched_${a.kvCache}`);
  const uniforms = PARAMS.pack({ heads: a.heads, kvHeads: a.kvHeads, headDim: a.headDim, slots: a.slots, window: a.window, scale: 1 / Math.sqrt(a.headDim), headBlocks });
  enc.dispatch(pipeline, uniforms, [a.q, a.kCache, a.vCache, a.rows, a.out], [a.kvHeads * headBlocks, a.tokens]);
}
