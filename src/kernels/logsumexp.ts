/** Log-sum-exp of each row on the device: log-probabilities from a top-k readout without the row. */
import { Encoder, getPipeline, params, wgsl, type Binding } from '../gpu/encoder.ts';

/** out[r] = log(sum_j exp(logits[r, j])) over j < n; out is an f32 buffer [rows]. */
export function logSumExp(enc: Encoder, a: { logits: Binding; n: number; rows: number; out: Binding }): void {
  if (a.rows === 0) return;
  if (a.n < 1) throw new Error(`logSumExp: n must be positive, got ${a.n}`);
  const pipeline = getPipeline(enc.gpu, wgsl('logsumexp.wgsl', import.meta.url), 'main', {}, 'logsumexp');
  enc.dispatch(pipeline, params([a.n]), [a.logits, a.out], [a.rows]); // one workgroup per row
}
