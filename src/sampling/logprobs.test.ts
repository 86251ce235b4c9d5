import { describe, expect, it } from 'vitest';
import { Rng } from '../util/rng.ts';
import { freshSeed, randomNormal } from '../util/testing.ts';
import { logSumExp, stepLogprobs } from './logprobs.ts';

describe('log-probabilities', () => {
  it('log-softmax of a 32002-token row: the top k in order, probabilities summing to 1', () => {
    const seed = freshSeed();
    const row = randomNormal(new Rng(seed), 32002, 3);
    const { logSumExp: lse, top } = stepLogprobs(row, 20);
    // Plain float64 reference without the max shift (safe at this scale).
    let sum = 0;
    for (const v of row) sum += Math.exp(v);
    expect(Math.abs(lse - Math.log(sum)), `seed ${seed}`).toBeLessThan(1e-9);
    const sorted = Array.from(row, (v, id) => ({ id, v })).sort((a, b) => b.v - a.v || a.id - b.id);
    expect(top.map((t) => t.id), `seed ${seed}`).toEqual(sorted.slice(0, 20).map((s) => s.id));
    top.forEach((t) => expect(Math.abs(t.logprob - (row[t.id]! - Math.log(sum)))).toBeLessThan(1e-9));
    let total = 0;
    for (const v of row) total += Math.exp(v - lse);
    expect(Math.abs(total - 1)).toBeLessThan(1e-9);
    expect(stepLogprobs(row, 0).top).toEqual([]);
  });

  it('does not overflow on large logits; NaN and all -Infinity throw', () => {
    expect(logSumExp([1000, 1000])).toBeCloseTo(1000 + Math.log(2), 9);
    expect(logSumExp([-Infinity, 0])).toBe(0);
    expect(() => logSumExp([0, NaN])).toThrow(/NaN/);
    expect(() => logSumExp([-Infinity, -Infinity])).toThrow(/finite/);
  });
});
