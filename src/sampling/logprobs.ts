/**
 * Log-probabilities as the hosted APIs report them: the model's own distribution at each step,
 * log_softmax(logits), before temperature, penalties, filters and constraints (vLLM's default).
 */
import { selectTopK } from './sampler.ts';

export interface TokenLogprob {
  id: number;
  logprob: number;
}

export interface StepLogprobs {
  /** log(sum(exp(logits))): logprob(j) = logits[j] - logSumExp. */
  logSumExp: number;
  /** The `top` most likely tokens, best first (ties to the lower id). */
  top: TokenLogprob[];
}

/** log-sum-exp of a row in float64, shifted by the maximum (no overflow). NaN throws. */
export function logSumExp(logits: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (Number.isNaN(v)) throw new RangeError(`logit ${i} is NaN`);
    if (v > max) max = v;
  }
  if (!Number.isFinite(max)) throw new RangeError(`the largest logit must be finite; got ${max}`);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum);
}

/** The row's log-sum-exp and its `top` most likely tokens with their log-probabilities (top 0: none). */
export function stepLogprobs(logits: ArrayLike<number>, top: number): StepLogprobs {
  const lse = logSumExp(logits);
  const ids = new Uint32Array(Math.min(top, logits.length));
  if (ids.length) selectTopK(logits, ids);
  return { logSumExp: lse, top: Array.from(ids, (id) => ({ id, logprob: logits[id]! - lse })) };
}
