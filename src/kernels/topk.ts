/**
 * Top-k on the device: the sampler with top_k reads back k (id, logit) pairs instead
 * of the whole vocabulary.
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, wgsl, type Binding } from '../gpu/encoder.ts';

/** The sort buffer's size in topk.wgsl (its MAX_K override constant). */
const MAX_K = 1024;
const PARAMS = new UniformLayout({ n: 'u32', k: 'u32', sortSize: 'u32' });

/**
 * The k largest of logits[0..n), sorted descending (ties: lower index first), into
 * outIds (u32 [k]) and outValues (f32 [k]).
 */
export function topK(enc: Encoder, a: { logits: Binding; n: number; k: number; outIds: Binding; outValues: Binding }): void {
  if (!(a.k >= 1 && a.k <= Math.min(a.n, MAX_K))) {
    throw new Error(`topK: k must be in 1..min(n, ${MAX_K}), got k = ${a.k} with n = ${a.n}`);
  }
  let sortSize = 1;
  while (sortSize < a.k) sortSize *= 2;
  const pipeline = getPipeline(enc.gpu, kernelSource(wgsl('topk.wgsl', import.meta.url), PARAMS), 'main', { MAX_K }, 'topk');
  enc.dispatch(pipeline, PARAMS.pack({ n: a.n, k: a.k, sortSize }), [a.logits, a.outIds, a.outValues], [1], { bytes: a.n * 4 }); // one workgroup
}
