/** Log-probabilities of whole rows, for tests and benchmarks that compare distributions. */
import { logSumExpRef } from '../kernels/logsumexp.ref.ts';

/** log_softmax(row) in float64: each logit minus the row's log-sum-exp (its CPU reference). */
export function logSoftmax(row: Float32Array): Float64Array {
  const lse = logSumExpRef(row);
  return Float64Array.from(row, (v) => v - lse);
}
