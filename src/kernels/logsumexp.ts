/** Log-sum-exp of each row on the device: log-probabilities from a top-k readout without the row. */
import { Encoder, getPipeline, kernelSource, UniformLayout, wgsl, type Binding } from '../gpu/encoder.ts';

const PARAMS = new UniformLayout({ n: 'u32' });

/** out[r] = log(sum_j exp(logits[r, j])) over j < n; out is an f32 buffer [rows]. */
export function logSumExp(enc: Encoder, a: { logits: Binding; n: number; rows: number; out: Binding }): void {
  if (a.rows === 0) return;
  if (a.n < 1) throw new Error(`logSumExp: n must be positive, got ${a.n}`);
  const pipeline = getPipeline(enc.gpu, kernelSource(wgsl('logsumexp.wgsl', import.meta.url), PARAMS), 'main', {}, 'logsumexp');
  enc.dispatch(pipeline, PARAMS.pack({ n: a.n }), [a.logits, a.out], [a.rows], { bytes: a.rows * a.n * 4 }); // one workgroup per row
}
