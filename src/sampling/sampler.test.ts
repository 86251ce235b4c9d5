import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type SamplingParams } from './params.ts';
import { Sampler, argmaxOf, foldSeed, selectTopK, type TokenHistory } from './sampler.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';

const NO_HISTORY: TokenHistory = { prompt: [], generated: [] };
const VOCAB = 32002; // OpenChat 3.5

function params(overrides: Partial<SamplingParams>): SamplingParams {
  return { ...DEFAULT_SAMPLING, ...overrides };
}

/** The final distribution as a map id -> probability. */
function distributionOf(p: Partial<SamplingParams>, logits: number[] | Float32Array, history = NO_HISTORY) {
  const row = Float32Array.from(logits);
  const d = new Sampler(params(p), row.length, 1).distribution(row, history);
  const map = new Map<number, number>();
  d.ids.forEach((id, i) => map.set(id, d.probs[i]!));
  return map;
}

function normalised(weights: Record<number, number>): Map<number, number> {
  const total = Object.values(weights).reduce((a, b) => a + b, 0);
  return new Map(Object.entries(weights).map(([id, w]) => [Number(id), w / total]));
}

function expectSameDistribution(actual: Map<number, number>, expected: Map<number, number>, tol = 1e-6, label = '') {
  expect([...actual.keys()].sort((a, b) => a - b), `kept tokens ${label}`).toEqual(
    [...expected.keys()].sort((a, b) => a - b),
  );
  for (const [id, p] of expected) {
    expect(Math.abs(actual.get(id)! - p), `p[${id}] = ${actual.get(id)} vs ${p} ${label}`).toBeLessThanOrEqual(tol);
  }
}

/**
 * The reference: every processor written the plain way, on a full sort of the vocabulary, in
 * float64. Tests compare the Sampler (heap, histogram, min_p before sorting) against it.
 */
function referenceDistribution(p: SamplingParams, input: Float32Array, history: TokenHistory): Map<number, number> {
  // The penalties edit a float32 row in place, so each step rounds to float32, as in the Sampler.
  const row = Float32Array.from(input);
  if (p.repetition_penalty !== 1) {
    for (const t of new Set([...Array.from(history.prompt), ...Array.from(history.generated)])) {
      row[t] = row[t]! > 0 ? row[t]! / p.repetition_penalty : row[t]! * p.repetition_penalty;
    }
  }
  const counts = new Map<number, number>();
  for (const t of Array.from(history.generated)) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (const [t, c] of counts) row[t] = row[t]! - (c * p.frequency_penalty + p.presence_penalty);
  let order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b);
  if (p.temperature === 0) return new Map([[order[0]!, 1]]);
  if (p.top_k > 0) order = order.slice(0, p.top_k);
  const w = order.map((id) => Math.exp((row[id]! - row[order[0]!]!) / p.temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let keep = order.length;
  let cum = 0;
  if (p.top_p < 1) {
    for (let i = 0; i < order.length; i++) {
      cum += w[i]!;
      if (cum >= p.top_p * total) {
        keep = i + 1;
        break;
      }
    }
  }
  const pMax = w[0]! / total;
  const kept: Record<number, number> = {};
  for (let i = 0; i < keep; i++) {
    if (w[i]! > 0 && w[i]! / total >= p.min_p * pMax) kept[order[i]!] = w[i]!;
  }
  return normalised(kept);
}

const L = [Math.log(4), Math.log(2), 0, 0]; // probabilities 1/2, 1/4, 1/8, 1/8 at temperature 1

describe('processors, hand-computed', () => {
  it('repetition penalty divides positive and multiplies negative logits, once per seen token', () => {
    // prompt and output both count; token 0 appears twice but is penalised once.
    const history = { prompt: [0, 3, 0], generated: [3, 2] };
    const got = distributionOf({ repetition_penalty: 2 }, [2, 1, 0, -1, 0.5], history);
    // Expected logits: [2/2, 1, 0 (unchanged), -1*2, 0.5].
    const e = [1, 1, 0, -2, 0.5].map(Math.exp);
    expectSameDistribution(got, normalised({ ...e }));
    // A penalty below 1 rewards repetition instead: [4, 1, 0, -0.5, 0.5].
    const rewarded = distributionOf({ repetition_penalty: 0.5 }, [2, 1, 0, -1, 0.5], history);
    expectSameDistribution(rewarded, normalised({ ...[4, 1, 0, -0.5, 0.5].map(Math.exp) }));
  });

  it('presence and frequency penalties count generated tokens only', () => {
    const history = { prompt: [3, 3], generated: [1, 1, 2, 1] };
    const got = distributionOf({ presence_penalty: 0.25, frequency_penalty: 0.5 }, [0, 0, 0, 0], history);
    // token 1: 3 * 0.5 + 0.25 = 1.75; token 2: 1 * 0.5 + 0.25 = 0.75; token 3 (prompt only): 0.
    expectSameDistribution(got, normalised({ ...[0, -1.75, -0.75, 0].map(Math.exp) }));
    // Negative penalties encourage repetition.
    const neg = distributionOf({ presence_penalty: -1, frequency_penalty: -0.5 }, [0, 0, 0, 0], history);
    expectSameDistribution(neg, normalised({ ...[0, 2.5, 1.5, 0].map(Math.exp) }));
  });

  it('applies the repetition penalty before the additive ones', () => {
    // [2, -1], both generated once. Repetition 2 first: [1, -2], then presence 1: [0, -3].
    // (The other order would give [0.5, -4].)
    const got = distributionOf({ repetition_penalty: 2, presence_penalty: 1 }, [2, -1], { prompt: [], generated: [0, 1] });
    expectSameDistribution(got, normalised({ 0: 1, 1: Math.exp(-3) }));
  });

  it('temperature sharpens and flattens', () => {
    expectSameDistribution(distributionOf({}, L), normalised({ 0: 4, 1: 2, 2: 1, 3: 1 }));
    expectSameDistribution(distributionOf({ temperature: 0.5 }, L), normalised({ 0: 16, 1: 4, 2: 1, 3: 1 }));
    expectSameDistribution(distributionOf({ temperature: 2 }, L), normalised({ 0: 2, 1: Math.SQRT2, 2: 1, 3: 1 }));
  });

  it('top_k keeps exactly k, ties to the lower id', () => {
    expectSameDistribution(distributionOf({ top_k: 2 }, L), normalised({ 0: 2, 1: 1 }));
    expectSameDistribution(distributionOf({ top_k: 3 }, L), normalised({ 0: 4, 1: 2, 2: 1 }));
    expectSameDistribution(distributionOf({ top_k: 2 }, [1, 3, 3, 0, 3]), normalised({ 1: 1, 2: 1 }));
    // k at least the vocabulary keeps everything.
    expectSameDistribution(distributionOf({ top_k: 10 }, L), normalised({ 0: 4, 1: 2, 2: 1, 3: 1 }));
  });

  it('top_p keeps the smallest most-likely set reaching top_p', () => {
    // Cumulative: 0.5, 0.75, 0.875, 1.
    expectSameDistribution(distributionOf({ top_p: 0.45 }, L), normalised({ 0: 1 }));
    expectSameDistribution(distributionOf({ top_p: 0.6 }, L), normalised({ 0: 2, 1: 1 }));
    // 0.8 needs a third token; 2 and 3 tie, the lower id goes first.
    expectSameDistribution(distributionOf({ top_p: 0.8 }, L), normalised({ 0: 4, 1: 2, 2: 1 }));
    expectSameDistribution(distributionOf({ top_p: 0.9 }, L), normalised({ 0: 4, 1: 2, 2: 1, 3: 1 }));
    // Always at least one token, however small top_p.
    expectSameDistribution(distributionOf({ top_p: 1e-9 }, L), normalised({ 0: 1 }));
    // After temperature 0.5: 16/22 = 0.727 < 0.75 <= 20/22.
    expectSameDistribution(distributionOf({ top_p: 0.75, temperature: 0.5 }, L), normalised({ 0: 4, 1: 1 }));
    // After top_k 2 (renormalised: 2/3, 1/3), 0.6 needs one token; without top_k it needs two.
    expectSameDistribution(distributionOf({ top_p: 0.6, top_k: 2 }, L), normalised({ 0: 1 }));
  });

  it('min_p keeps p >= min_p * p_max, after temperature and top_p', () => {
    // p_max = 1/2: min_p 0.3 -> p >= 0.15 keeps 1/2 and 1/4; min_p 0.2 -> p >= 0.1 keeps all.
    expectSameDistribution(distributionOf({ min_p: 0.3 }, L), normalised({ 0: 2, 1: 1 }));
    expectSameDistribution(distributionOf({ min_p: 0.2 }, L), normalised({ 0: 4, 1: 2, 2: 1, 3: 1 }));
    expectSameDistribution(distributionOf({ min_p: 0.6 }, L), normalised({ 0: 1 }));
    // Temperature 2: relative probabilities 1, 0.707, 0.5, 0.5, so 0.6 keeps two.
    expectSameDistribution(distributionOf({ min_p: 0.6, temperature: 2 }, L), normalised({ 0: 2, 1: Math.SQRT2 }));
    // min_p 1 keeps the tokens tied for the top.
    expectSameDistribution(distributionOf({ min_p: 1 }, [1, 3, 3, 0]), normalised({ 1: 1, 2: 1 }));
    expectSameDistribution(distributionOf({ min_p: 1, top_k: 3 }, [1, 3, 3, 0]), normalised({ 1: 1, 2: 1 }));
    // With top_p 0.8 (keeps 0, 1, 2) then min_p 0.2 (would keep all): 0, 1, 2.
    expectSameDistribution(distributionOf({ top_p: 0.8, min_p: 0.2 }, L), normalised({ 0: 4, 1: 2, 2: 1 }));
    // Same with top_k: the candidates path.
    expectSameDistribution(distributionOf({ top_k: 4, min_p: 0.3 }, L), normalised({ 0: 2, 1: 1 }));
  });

  it('never keeps a token whose logit is -Infinity', () => {
    const row = [0, -Infinity, 0, -Infinity];
    expectSameDistribution(distributionOf({}, row), normalised({ 0: 1, 2: 1 }));
    expectSameDistribution(distributionOf({ top_k: 3 }, row), normalised({ 0: 1, 2: 1 }));
    expectSameDistribution(distributionOf({ top_p: 0.99 }, row), normalised({ 0: 1, 2: 1 }));
  });

  it('greedy takes the argmax, lowest id on ties, after penalties', () => {
    const s = new Sampler(params({ temperature: 0 }), 4, 1);
    expect(s.greedy).toBe(true);
    expect(s.sample(Float32Array.from([1, 3, 3, 0]), NO_HISTORY)).toBe(1);
    const penalised = new Sampler(params({ temperature: 0, presence_penalty: 0.5 }), 2, 1);
    expect(penalised.sample(Float32Array.from([3, 2.9]), { prompt: [], generated: [0] })).toBe(1);
    // From candidates (device order may put tied ids in any order).
    expect(s.sampleFromCandidates(Uint32Array.from([3, 2, 0]), Float32Array.from([5, 5, 1]))).toBe(2);
    expect(argmaxOf([-Infinity, 2, 2])).toBe(1);
  });

  it('rejects rows it cannot sample from', () => {
    const s = new Sampler(params({}), 3, 1);
    expect(() => s.sample(Float32Array.from([0, Number.NaN, 1]), NO_HISTORY)).toThrow(/NaN/);
    expect(() => s.sample(Float32Array.from([-Infinity, -Infinity, -Infinity]), NO_HISTORY)).toThrow(/finite/);
    expect(() => s.sample(Float32Array.from([0, 1]), NO_HISTORY)).toThrow(/expected 3 logits/);
    const r = new Sampler(params({ repetition_penalty: 1.1 }), 3, 1);
    expect(() => r.sample(Float32Array.from([0, 1, 2]), { prompt: [3], generated: [] })).toThrow(/outside the vocabulary/);
  });
});

describe('needsFullLogits and the candidates path', () => {
  it('is false only when the top-k candidates decide', () => {
    const flag = (p: Partial<SamplingParams>) => new Sampler(params(p), VOCAB, 1).needsFullLogits;
    expect(flag({})).toBe(true);
    expect(flag({ top_p: 0.9 })).toBe(true);
    expect(flag({ top_k: 40 })).toBe(false);
    expect(flag({ top_k: 40, top_p: 0.9, min_p: 0.05, temperature: 0.7 })).toBe(false);
    expect(flag({ top_k: 40, repetition_penalty: 1.1 })).toBe(true);
    expect(flag({ top_k: 40, presence_penalty: 0.1 })).toBe(true);
    expect(flag({ top_k: 40, frequency_penalty: -0.1 })).toBe(true);
    expect(flag({ temperature: 0 })).toBe(false);
    expect(flag({ temperature: 0, frequency_penalty: 0.5 })).toBe(true);
    expect(() => new Sampler(params({}), 4, 1).sampleFromCandidates(new Uint32Array([0]), new Float32Array([0]))).toThrow(
      /full logits/,
    );
    const short = new Sampler(params({ top_k: 3 }), 4, 1);
    expect(() => short.sampleFromCandidates(Uint32Array.from([0, 1]), Float32Array.from([1, 0]))).toThrow(/top_k is 3/);
  });

  it('sampleFromCandidates gives the same tokens as sample on the full row, draw for draw', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    for (let trial = 0; trial < 4; trial++) {
      const p = params({
        top_k: 1 + rng.int(0, 1000),
        temperature: 0.2 + 1.5 * rng.next(),
        top_p: trial % 2 ? 0.5 + 0.5 * rng.next() : 1,
        min_p: trial >= 2 ? 0.05 * rng.next() : 0,
      });
      const full = new Sampler(p, VOCAB, seed + trial);
      const device = new Sampler(p, VOCAB, seed + trial);
      for (let step = 0; step < 12; step++) {
        // Logits on a coarse grid so that ties (broken by id) are common.
        const row = new Float32Array(VOCAB).map(() => Math.round(rng.normal() * 12) / 4);
        // The device sends its top k (ties at the k-th place to the lower ids) sorted by logit,
        // ties within the list in no particular order (here: reversed).
        const topSet = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b).slice(0, p.top_k);
        const ids = Uint32Array.from(topSet.sort((a, b) => row[b]! - row[a]! || b - a));
        const fromDevice = device.sampleFromCandidates(ids, Float32Array.from(ids, (id) => row[id]!));
        expect(full.sample(row, NO_HISTORY), `seed ${seed} trial ${trial} step ${step}`).toBe(fromDevice);
      }
    }
  });
});

describe('matches the plain reference on the real vocabulary', () => {
  it('over random rows, parameters and histories', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    for (let trial = 0; trial < 12; trial++) {
      const scale = [0.5, 3, 10][trial % 3]!;
      const row = new Float32Array(VOCAB).map(() => rng.normal() * scale);
      for (let i = 0; i < 50; i++) row[rng.int(0, VOCAB)] = -Infinity; // masked tokens
      const p = params({
        temperature: [0.05, 0.7, 1, 1.9][rng.int(0, 4)]!,
        top_k: rng.next() < 0.4 ? rng.int(1, 1001) : 0,
        top_p: rng.next() < 0.6 ? 0.05 + 0.95 * rng.next() : 1,
        min_p: rng.next() < 0.4 ? 0.3 * rng.next() : 0,
        repetition_penalty: rng.next() < 0.3 ? 0.5 + 1.5 * rng.next() : 1,
        presence_penalty: rng.next() < 0.3 ? 4 * rng.next() - 2 : 0,
        frequency_penalty: rng.next() < 0.3 ? 4 * rng.next() - 2 : 0,
      });
      const history = {
        prompt: Array.from({ length: 200 }, () => rng.int(0, VOCAB)),
        generated: Array.from({ length: 60 }, () => rng.int(0, 300)), // repeats
      };
      const label = `seed ${seed} trial ${trial} ${JSON.stringify(p)}`;
      const expected = referenceDistribution(p, row, history);
      const got = new Sampler(p, VOCAB, 1).distribution(row, history);
      const map = new Map<number, number>();
      got.ids.forEach((id, i) => map.set(id, got.probs[i]!));
      expectSameDistribution(map, expected, 1e-12, label);
    }
  });

  it('selectTopK agrees with a full sort', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const row = new Float32Array(VOCAB).map(() => Math.round(rng.normal() * 8) / 2);
    const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b);
    for (const k of [1, 2, 7, 40, 1000, VOCAB]) {
      const out = new Uint32Array(k);
      selectTopK(row, out);
      expect(Array.from(out), `seed ${seed} k ${k}`).toEqual(order.slice(0, k));
    }
  });
});

describe('seeds', () => {
  /** A stand-in language model: logits that depend on the history, so a different token changes the future. */
  function run(p: SamplingParams, seed: number, steps: number): number[] {
    const vocab = 500;
    const sampler = new Sampler(p, vocab, seed);
    const prompt = [1, 2, 3];
    const generated: number[] = [];
    for (let step = 0; step < steps; step++) {
      const context = new Rng((generated.at(-1) ?? 0) * 7919 + step);
      const row = new Float32Array(vocab).map(() => context.normal() * 2);
      generated.push(sampler.sample(row, { prompt, generated }));
    }
    return generated;
  }

  it('the same seed, prompt and parameters give the same tokens', () => {
    const seed = freshSeed();
    for (const p of [
      params({}),
      params({ temperature: 0.8, top_p: 0.9, repetition_penalty: 1.2, frequency_penalty: 0.3 }),
      params({ top_k: 20, min_p: 0.05, presence_penalty: 0.5 }),
    ]) {
      const a = run(p, seed, 60);
      expect(run(p, seed, 60), `seed ${seed}`).toEqual(a);
      // Another seed takes another path (60 draws from a wide distribution all agreeing: ~impossible).
      expect(run(p, seed + 1, 60), `seed ${seed}`).not.toEqual(a);
    }
  });

  it('folds 64-bit-style seeds into 32 bits', () => {
    for (const s of [0, 1, 42, 2 ** 32 - 1]) expect(foldSeed(s)).toBe(s);
    expect(foldSeed(2 ** 32)).not.toBe(foldSeed(0));
    expect(foldSeed(-1)).not.toBe(foldSeed(2 ** 32 - 1));
    expect(foldSeed(-(2 ** 53 - 1))).toBeGreaterThanOrEqual(0);
  });
});

describe('sampled frequencies match the exact distribution', () => {
  // Tolerance: each token's frequency f over N independent draws has E[f] = p, and by Hoeffding's
  // inequality P(|f - p| >= t) <= 2 exp(-2 N t^2). With N = 100000 and t = 0.011 that is
  // 2 exp(-24.2) < 6.3e-11 per token, so below 1e-9 over the <= 12 tokens of a case and below
  // 1e-8 over all cases: a failure means a real bias, not bad luck. The typical deviation is
  // sqrt(p (1 - p) / N) <= 0.0016, and the errors this guards against (a wrong temperature, an
  // off-by-one in a cut-off, a biased draw) move some probability by several percent.
  const N = 100_000;
  const TOL = 0.011;
  const ROW = [2.0, 1.6, 1.5, 1.5, 0.3, 0.0, -0.4, -1.0, -2.5, -Infinity, 1.0, 0.9];

  const cases: [string, Partial<SamplingParams>][] = [
    ['plain', {}],
    ['temperature 0.6', { temperature: 0.6 }],
    ['temperature 1.8', { temperature: 1.8 }],
    ['top_k 5', { top_k: 5 }],
    ['top_p 0.7', { top_p: 0.7 }],
    ['min_p 0.2', { min_p: 0.2 }],
    ['all together', { temperature: 1.3, top_k: 8, top_p: 0.85, min_p: 0.1 }],
  ];
  for (const [name, overrides] of cases) {
    it(name, () => {
      const seed = freshSeed();
      const p = params(overrides);
      const input = Float32Array.from(ROW);
      const expected = referenceDistribution(p, input, NO_HISTORY);
      const sampler = new Sampler(p, ROW.length, seed);
      const counts = new Array<number>(ROW.length).fill(0);
      const row = new Float32Array(ROW.length);
      for (let i = 0; i < N; i++) {
        row.set(input);
        counts[sampler.sample(row, NO_HISTORY)]!++;
      }
      for (let id = 0; id < ROW.length; id++) {
        const f = counts[id]! / N;
        const want = expected.get(id) ?? 0;
        if (want === 0) expect(counts[id], `seed ${seed}: token ${id} is filtered out`).toBe(0);
        else expect(Math.abs(f - want), `seed ${seed}: token ${id} f ${f} p ${want}`).toBeLessThan(TOL);
      }
    });
  }
});

describe('seeds above 2^53 (OpenAI takes int64)', () => {
  it('fold deterministically, differently for different doubles, up to 2^63', () => {
    const seeds = [2 ** 53, 2 ** 53 + 2, 2 ** 62, 2 ** 62 + 2 ** 40, 2 ** 63, 9999999999];
    const folded = seeds.map(foldSeed);
    folded.forEach((f) => expect(Number.isInteger(f) && f >= 0 && f < 2 ** 32).toBe(true));
    expect(new Set(folded).size).toBe(seeds.length);
    expect(seeds.map(foldSeed)).toEqual(folded);
    expect(() => foldSeed(2 ** 64)).toThrow(/2\^63/);
  });
});

describe('a token mask (constrained decoding)', () => {
  it('only allowed tokens are ever drawn, and they keep their relative weights', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const logits = Array.from({ length: 50 }, () => rng.normal() * 2);
    const allowed = [3, 7, 8, 20, 41];
    const counts = new Map<number, number>();
    const sampler = new Sampler(params({ temperature: 0.8 }), 50, seed);
    const draws = 4000;
    for (let i = 0; i < draws; i++) {
      const t = sampler.sample(Float32Array.from(logits), NO_HISTORY, allowed);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    expect([...counts.keys()].every((t) => allowed.includes(t)), `seed ${seed}`).toBe(true);
    const w = allowed.map((t) => Math.exp(logits[t]! / 0.8));
    const total = w.reduce((a, b) => a + b, 0);
    allowed.forEach((t, i) => {
      const p = w[i]! / total;
      const sd = Math.sqrt((p * (1 - p)) / draws);
      expect(Math.abs((counts.get(t) ?? 0) / draws - p), `seed ${seed} token ${t}`).toBeLessThan(5 * sd + 1e-3);
    });
  });

  it('greedy picks the best allowed token; penalties see only the allowed ones; an empty mask throws', () => {
    const logits = [5, 1, 4, 3];
    expect(new Sampler(params({ temperature: 0 }), 4, 1).sample(Float32Array.from(logits), NO_HISTORY, [1, 3])).toBe(3);
    const penalised = new Sampler(params({ temperature: 0, repetition_penalty: 2 }), 4, 1);
    expect(penalised.sample(Float32Array.from(logits), { prompt: [3], generated: [] }, [1, 3])).toBe(3); // 3/2 > 1
    expect(penalised.sample(Float32Array.from([5, 2, 4, 3]), { prompt: [3], generated: [] }, [1, 3])).toBe(1); // 2 > 3/2
    expect(() => new Sampler(params({}), 4, 1).sample(Float32Array.from(logits), NO_HISTORY, [])).toThrow(/allows no token/);
    expect(() => new Sampler(params({}), 4, 1).sample(Float32Array.from(logits), NO_HISTORY, [4])).toThrow(/outside the vocabulary/);
  });
});
