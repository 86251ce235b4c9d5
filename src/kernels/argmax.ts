/** Greedy decoding on the device: the index of each row's largest logit. */
import { Encoder, getPipeline, params, wgsl, type Binding } from '../gpu/encoder.ts';

/** out[r] = index of the max of logits[r, 0..n), lowest index on ties. out is a u32 buffer [rows]. */
export function argmax(enc: Encoder, a: { logits: Binding; n: number; rows: number; out: Binding }): void {
  if (a.rows === 0) return;
  if (a.n < 1) throw new Error(`argmax: n must be positive, got ${a.n}`);
  const pipeline = getPipeline(enc.gpu, wgsl('argmax.wgsl', import.meta.url), 'main', {}, 'argmax');
  enc.dispatch(pipeline, params([a.n]), [a.logits, a.out], [a.rows]); // one workgroup per row
}
