/** Greedy decoding on the device: the index of each row's largest logit. */
import { Encoder, getPipeline, kernelSource, UniformLayout, wgsl, type Binding } from '../gpu/encoder.ts';

const PARAMS = new UniformLayout({ n: 'u32' });

/** out[r] = index of the max of logits[r, 0..n), lowest index on ties. out is a u32 buffer [rows]. */
export function argmax(enc: Encoder, a: { logits: Binding; n: number; rows: number; out: Binding }): void {
  if (a.rows === 0) return;
  if (a.n < 1) throw new Error(`argmax: n must be positive, got ${a.n}`);
  const pipeline = getPipeline(enc.gpu, kernelSource(wgsl('argmax.wgsl', import.meta.url), PARAMS), 'main', {}, 'argmax');
  enc.dispatch(pipeline, PARAMS.pack({ n: a.n }), [a.logits, a.out], [a.rows], { bytes: a.rows * a.n * 4 }); // one workgroup per row
}
