/**
 * Log-probabilities as the hosted APIs report them: the model's own distribution at each step,
 * log_softmax(logits), before temperature, penalties, filters and constraints (vLLM's default).
 */
import { logSumExpRef } from '../kernels/logsumexp.ref.ts';
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

/** log(sum(exp(logits))) in float64, shifted by the maximum: the kernel's CPU reference. */
export function logSumExp(logits: ArrayLike<number>): number {
  return logSumExpRef(logits);
}

/** The row's log-sum-exp and its `top` most likely tokens with their log-probabilities (top 0: none). */
export function stepLogprobs(logits: ArrayLike<number>, top: number): StepLogprobs {
  const lse = logSumExp(logits);
  const ids = new Uint32Array(Math.min(top, logits.length));
  if (ids.length) selectTopK(logits, ids);
  return { logSumExp: lse, top: Array.from(ids, (id) => ({ id, logprob: logits[id]! - lse })) };
}
