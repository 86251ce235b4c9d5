/**
 * log(sum_j exp(x_j)) of a row, plainly, in float64, shifted by the maximum (no overflow).
 * Also the CPU path of log-probabilities (src/sampling/logprobs.ts). NaN throws; a row without a
 * finite maximum throws (nothing to normalise against).
 */
export function logSumExpRef(logits: ArrayLike<number>, start = 0, n = logits.length - start): number {
  let max = -Infinity;
  for (let i = start; i < start + n; i++) {
    const v = logits[i]!;
    if (Number.isNaN(v)) throw new RangeError(`logit ${i - start} is NaN`);
    if (v > max) max = v;
  }
  if (!Number.isFinite(max)) throw new RangeError(`the largest logit must be finite; got ${max}`);
  let sum = 0;
  for (let i = start; i < start + n; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum);
}
