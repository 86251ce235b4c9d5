/**
 * What the attention wrappers (index.ts) share: the kernels' sources, each with
 * the KV-cache format's snippet and the attention snippets it uses prepended, and the check of
 * the head shape.
 */
import type { ShaderSource } from '../../gpu/encoder.ts';
import { kvKernelSource, type KvCacheDtype } from '../kv_cache.ts';

/**
 * The snippets each attention kernel is built from, after the cache format's and before its own
 * file: softmax.wgsl for every one; chunk.wgsl, the Params and bindings tiled and flash share;
 * group_sums.wgsl, the key groups' last step that tiled and split share.
 */
const SNIPPETS = {
  'tiled.wgsl': ['softmax.wgsl', 'chunk.wgsl', 'group_sums.wgsl'],
  'flash.wgsl': ['softmax.wgsl', 'chunk.wgsl'],
  'split.wgsl': ['softmax.wgsl', 'group_sums.wgsl'],
} as const;

/** An attention kernel's source for a cache format: kv_cache_<dtype>.wgsl, its SNIPPETS, then `file`. */
export function attentionSource(kvCache: KvCacheDtype, file: keyof typeof SNIPPETS): ShaderSource {
  return kvKernelSource(kvCache, file, import.meta.url, SNIPPETS[file]);
}

/**
 * Throws unless the kernels can take this head shape (`op` names the caller in the message);
 * returns how many workgroups of `headsPerWorkgroup` query heads each KV head's group needs.
 */
export function headBlocks(op: string, a: { heads: number; kvHeads: number; headDim: number }, headsPerWorkgroup: number): number {
  if (a.headDim % 4 !== 0 || a.headDim > 256) {
    throw new Error(`${op}: headDim must be a multiple of 4 and at most 256, got ${a.headDim}`);
  }
  if (a.kvHeads < 1 || a.heads % a.kvHeads !== 0) {
    throw new Error(`${op}: heads (${a.heads}) must be a multiple of kvHeads (${a.kvHeads})`);
  }
  return Math.ceil(a.heads / a.kvHeads / headsPerWorkgroup);
}
