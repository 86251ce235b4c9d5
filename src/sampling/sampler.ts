/**
 * Turning one row of logits into the next token.
 *
 * Processors, in the order they are applied (the order of vLLM and Hugging Face):
 *
 *   1. repetition_penalty   logit[j] = logit[j] > 0 ? logit[j] / r : logit[j] * r,
 *                           once for every distinct token j in prompt + generated (HF semantics).
 *   2. presence/frequency   logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty,
 *                           count over the generated tokens only (OpenAI semantics).
 *   3. greedy               temperature 0: argmax (ties: the lowest id). Nothing below applies.
 *   4. temperature          p ∝ exp(logit / T).
 *   5. top_k                keep the k most likely tokens (exactly k: ties at the k-th place go to the lower ids).
 *   6. top_p                keep the smallest set of most likely tokens whose probability, renormalised
 *                           over what top_k kept, reaches top_p (always at least the most likely one).
 *   7. min_p                keep tokens with p >= min_p * p_max.
 *   8. sample               draw from what is left, renormalised, with the seeded PRNG (one draw per token).
 *
 * Why this order:
 *   - Penalties change the logits themselves, so every later step (and greedy) must see them.
 *     The multiplicative one goes first, as in HF and vLLM, so that a penalty value means the same
 *     as it does there whatever the additive penalties are.
 *   - Temperature comes before the filters because it changes the probabilities that top_p and
 *     min_p threshold (it does not change the ranking, so top_k is indifferent to it).
 *   - top_k before top_p: top_p then measures mass within the k candidates. This is what lets the
 *     device reduce the row to its top k and send only those (`sampleFromCandidates`): the
 *     probabilities renormalised over the k candidates are exactly those top_p needs.
 *   - min_p last: it is relative to the most likely token, so renormalisation by the earlier
 *     filters does not change it. Both top_p and min_p keep a prefix of the tokens sorted by
 *     probability, so "top_p then min_p" is simply the shorter of the two prefixes; the code
 *     uses that to filter by min_p before sorting.
 *
 * Numerics: probabilities are formed in float64 as w[j] = exp((logit[j] - max) / T), so the most
 * likely token has weight exactly 1 (no overflow, and min_p compares w[j] >= min_p directly).
 * Tokens whose weight is 0 (logit -Infinity, or underflow at a tiny temperature) are never drawn.
 *
 * Cost, for a 32002-token vocabulary: top_k uses a k-element heap over the row (no full sort).
 * Without top_k, top_p sorts only the tokens it may keep: a histogram of the weights by
 * log-probability (1/8-nat buckets) finds the bucket where the running mass crosses top_p, and
 * only the tokens in that bucket and the more likely ones are sorted.
 */
import { Rng } from '../util/rng.ts';
import type { SamplingParams } from './params.ts';

/** The history the penalties look at. */
export interface TokenHistory {
  prompt: ArrayLike<number>;
  generated: ArrayLike<number>;
}

/** A final distribution: token ids (most likely first when a filter sorted them) and their probabilities. */
export interface TokenDistribution {
  ids: Uint32Array;
  probs: Float64Array;
}

// Histogram for top_p without top_k: bucket b holds tokens with b/8 <= (max - logit)/T < (b+1)/8;
// the last bucket holds everything further than 32 nats from the most likely token.
const BUCKETS_PER_NAT = 8;
const NUM_BUCKETS = 32 * BUCKETS_PER_NAT + 1;

/**
 * The PRNG is seeded with 32 bits; a seed may be any integer of magnitude up to 2^63 (OpenAI takes
 * int64), so the high bits are mixed into the low 32. Seeds in [0, 2^32) map to themselves. Above
 * 2^53 a seed is the double JSON parsing made of it; the split below is still exact (ToUint32 is
 * the value mod 2^32, and division by 2^32 is exact), so each such double folds one way.
 */
export function foldSeed(seed: number): number {
  if (!(Number.isInteger(seed) && Math.abs(seed) <= 2 ** 63)) throw new RangeError(`seed must be an integer of magnitude at most 2^63; got ${seed}`);
  const low = seed >>> 0; // seed mod 2^32 (ToUint32 is exact for any safe integer, negatives included)
  const high = Math.floor(seed / 4294967296); // 0 for [0, 2^32), -1 for small negatives
  return (low ^ Math.imul(high, 0x9e3779b1)) >>> 0;
}

export class Sampler {
  /** Temperature 0: argmax (penalties still apply when set). */
  readonly greedy: boolean;
  /**
   * False when the top_k candidates alone decide the token (top_k > 0 and no penalty; or greedy
   * and no penalty): the device may then send only its top-k ids and logits to `sampleFromCandidates`.
   */
  readonly needsFullLogits: boolean;

  private readonly params: SamplingParams;
  private readonly vocabSize: number;
  private readonly rng: Rng;
  private readonly hasRepetitionPenalty: boolean;
  private readonly hasCountPenalties: boolean;
  /** top_k, at most the vocabulary (0: off). */
  private readonly topK: number;

  // Scratch, allocated once: sampling runs once per generated token.
  /** The tokens left after filtering and their weights (not normalised). */
  private readonly keptIds: Uint32Array;
  private readonly keptWeights: Float64Array;
  private keptCount = 0;
  /** Per-token weight and histogram bucket (no-top_k path). */
  private readonly weightOf: Float64Array;
  private readonly bucketOf: Uint16Array;
  private readonly bucketMass = new Float64Array(NUM_BUCKETS);
  /** The top_k candidates, best first (top_k path). */
  private readonly topIds: Uint32Array;
  private readonly topLogits: Float32Array;
  /** Penalty bookkeeping: `seen[j] === mark` means token j was already penalised this step. */
  private readonly seen: Uint32Array;
  private mark = 0;
  private readonly counts: Uint32Array;

  constructor(params: SamplingParams, vocabSize: number, seed: number) {
    if (!(Number.isInteger(vocabSize) && vocabSize >= 1 && vocabSize <= 0xffffffff)) {
      throw new RangeError(`vocabSize must be a positive integer; got ${vocabSize}`);
    }
    this.params = { ...params, stop: [...params.stop] };
    this.vocabSize = vocabSize;
    this.rng = new Rng(foldSeed(seed));
    this.greedy = params.temperature === 0;
    this.hasRepetitionPenalty = params.repetition_penalty !== 1;
    this.hasCountPenalties = params.presence_penalty !== 0 || params.frequency_penalty !== 0;
    const penalised = this.hasRepetitionPenalty || this.hasCountPenalties;
    this.topK = Math.min(params.top_k, vocabSize);
    this.needsFullLogits = penalised || !(this.greedy || params.top_k > 0);

    this.keptIds = new Uint32Array(vocabSize);
    this.keptWeights = new Float64Array(vocabSize);
    this.weightOf = new Float64Array(this.topK > 0 ? 0 : vocabSize);
    this.bucketOf = new Uint16Array(this.topK > 0 ? 0 : vocabSize);
    this.topIds = new Uint32Array(this.topK);
    this.topLogits = new Float32Array(this.topIds.length);
    this.seen = new Uint32Array(this.hasRepetitionPenalty ? vocabSize : 0);
    this.counts = new Uint32Array(this.hasCountPenalties ? vocabSize : 0);
  }

  /**
   * Picks the next token from the full vocabulary row. `logits` is modified in place by the
   * penalties. Consumes exactly one PRNG draw unless greedy (none).
   *
   * `allowed` (a constraint's token ids, e.g. JSON mode's): every other token's logit becomes
   * -Infinity before the processors run, so penalties, temperature and the filters all act on the
   * allowed tokens only, and a disallowed token is never drawn. It must not be empty.
   */
  sample(logits: Float32Array, history: TokenHistory, allowed?: ArrayLike<number>): number {
    if (allowed !== undefined) applyMask(logits, allowed);
    if (this.filterFull(logits, history)) return this.draw();
    return this.keptIds[0]!;
  }

  /**
   * Picks from candidates the device already reduced to the top k: `ids` sorted by descending
   * logit, `logits` their logits. Needs at least min(top_k, vocabSize) candidates (any number
   * when greedy); extra ones are cut off after re-sorting. Gives the same token as `sample` on the
   * full row, draw for draw, provided the device resolves ties at the k-th place towards the lower
   * ids as `sample` does (otherwise it is still a correct top-k sample, of a slightly different set).
   */
  sampleFromCandidates(ids: Uint32Array, logits: Float32Array): number {
    if (this.needsFullLogits) {
      throw new Error('this Sampler needs the full logits row (a penalty is set, or top_k is 0): use sample()');
    }
    if (ids.length !== logits.length || ids.length === 0) {
      throw new RangeError(`expected as many candidate ids as logits, at least one; got ${ids.length} and ${logits.length}`);
    }
    for (let i = 0; i < ids.length; i++) {
      this.checkToken(ids[i]!);
      if (Number.isNaN(logits[i]!)) throw new RangeError(`candidate logit ${i} is NaN`);
    }
    if (this.greedy) return ids[argmaxOf(logits, ids)]!;

    const k = this.topK;
    if (ids.length < k) throw new RangeError(`top_k is ${k} but only ${ids.length} candidates were given`);
    // Re-sort (k <= 1000, cheap) so that ties are ordered by id exactly as the full-row path does.
    const order = Array.from({ length: ids.length }, (_, i) => i);
    order.sort((a, b) => logits[b]! - logits[a]! || ids[a]! - ids[b]! || 0);
    for (let i = 0; i < k; i++) {
      this.topIds[i] = ids[order[i]!]!;
      this.topLogits[i] = logits[order[i]!]!;
    }
    checkRowMax(this.topLogits[0]!);
    this.filterSorted(k);
    return this.draw();
  }

  /**
   * The distribution `sample` would draw from for this row (penalties applied in place), without
   * drawing: for tests, and for reporting log-probabilities. Greedy gives its argmax with p = 1.
   */
  distribution(logits: Float32Array, history: TokenHistory): TokenDistribution {
    this.filterFull(logits, history);
    const n = this.keptCount;
    let total = 0;
    for (let i = 0; i < n; i++) total += this.keptWeights[i]!;
    const probs = new Float64Array(n);
    for (let i = 0; i < n; i++) probs[i] = this.keptWeights[i]! / total;
    return { ids: this.keptIds.slice(0, n), probs };
  }

  // -------------------------------------------------------------------------

  /** Steps 1-7 on a full row; leaves the kept tokens in keptIds/keptWeights. False when greedy decided. */
  private filterFull(logits: Float32Array, history: TokenHistory): boolean {
    if (logits.length !== this.vocabSize) {
      throw new RangeError(`expected ${this.vocabSize} logits; got ${logits.length}`);
    }
    if (this.hasRepetitionPenalty) this.applyRepetitionPenalty(logits, history);
    if (this.hasCountPenalties) this.applyCountPenalties(logits, history.generated);
    if (this.greedy) {
      this.keptIds[0] = argmaxOf(logits);
      this.keptWeights[0] = 1;
      this.keptCount = 1;
      return false;
    }
    if (this.topK > 0) {
      selectTopK(logits, this.topIds);
      for (let i = 0; i < this.topIds.length; i++) this.topLogits[i] = logits[this.topIds[i]!]!;
      checkRowMax(this.topLogits[0]!);
      this.filterSorted(this.topIds.length);
    } else {
      this.filterRow(logits);
    }
    return true;
  }

  /** Step 1: Hugging Face's repetition penalty, once per distinct token of prompt + generated. */
  private applyRepetitionPenalty(logits: Float32Array, history: TokenHistory): void {
    const r = this.params.repetition_penalty;
    this.mark++;
    if (this.mark === 0x100000000) {
      // A new mark per call avoids clearing `seen`; after 2^32 calls, clear once and start over.
      this.seen.fill(0);
      this.mark = 1;
    }
    for (const tokens of [history.prompt, history.generated]) {
      for (let i = 0; i < tokens.length; i++) {
        const t = this.checkToken(tokens[i]!);
        if (this.seen[t] === this.mark) continue;
        this.seen[t] = this.mark;
        const v = logits[t]!;
        logits[t] = v > 0 ? v / r : v * r;
      }
    }
  }

  /** Step 2: OpenAI's presence and frequency penalties over the generated tokens. */
  private applyCountPenalties(logits: Float32Array, generated: ArrayLike<number>): void {
    const { presence_penalty: presence, frequency_penalty: frequency } = this.params;
    for (let i = 0; i < generated.length; i++) this.counts[this.checkToken(generated[i]!)]!++;
    for (let i = 0; i < generated.length; i++) {
      const t = generated[i]!;
      const c = this.counts[t]!;
      if (c === 0) continue; // already done (a repeated token)
      logits[t] = logits[t]! - (c * frequency + presence);
      this.counts[t] = 0; // leaves `counts` all zero again for the next call
    }
  }

  /**
   * Steps 4, 6, 7 on candidates sorted best first (topIds/topLogits[0..count)): weights, then the
   * top_p prefix, then the min_p prefix; the shorter one wins.
   */
  private filterSorted(count: number): void {
    const { temperature: T, top_p: topP, min_p: minP } = this.params;
    const best = this.topLogits[0]!;
    let total = 0;
    for (let i = 0; i < count; i++) {
      const w = Math.exp(-(best - this.topLogits[i]!) / T);
      this.keptIds[i] = this.topIds[i]!;
      this.keptWeights[i] = w;
      total += w;
    }
    let keep = count;
    if (topP < 1) {
      const target = topP * total;
      let cum = 0;
      for (let i = 0; i < count; i++) {
        cum += this.keptWeights[i]!;
        if (cum >= target) {
          keep = i + 1;
          break;
        }
      }
    }
    // min_p: weights decrease along the list and the first is 1, so this keeps a prefix of >= 1.
    // Zero weights (logit -Infinity) go too: they can never be drawn.
    let i = 0;
    while (i < keep && this.keptWeights[i]! >= minP && this.keptWeights[i]! > 0) i++;
    this.keptCount = i;
  }

  /** Steps 4, 6, 7 on the whole row, without top_k (see the header for the histogram). */
  private filterRow(logits: Float32Array): void {
    const { temperature: T, top_p: topP, min_p: minP } = this.params;
    const V = this.vocabSize;
    const max = checkRowMax(maxOf(logits));
    const useBuckets = topP < 1;
    if (useBuckets) this.bucketMass.fill(0);

    // One pass: every token's weight counts towards the total that top_p measures against;
    // only tokens passing min_p (and with a weight > 0) are candidates.
    let total = 0;
    let count = 0;
    for (let j = 0; j < V; j++) {
      const d = (max - logits[j]!) / T; // >= 0: distance from the most likely token, in nats
      const w = Math.exp(-d);
      total += w;
      if (w > 0 && w >= minP) {
        this.keptIds[count++] = j;
        this.weightOf[j] = w;
        if (useBuckets) {
          const bucket = Math.min(Math.floor(d * BUCKETS_PER_NAT), NUM_BUCKETS - 1);
          this.bucketOf[j] = bucket;
          this.bucketMass[bucket] += w;
        }
      }
    }

    if (!useBuckets) {
      // No top_p: the candidates need no order; draw over them in id order.
      for (let i = 0; i < count; i++) this.keptWeights[i] = this.weightOf[this.keptIds[i]!]!;
      this.keptCount = count;
      return;
    }

    // The bucket where the running mass (most likely first) reaches top_p. If none does, min_p
    // removed more than top_p would: every candidate stays.
    const target = topP * total;
    let last = NUM_BUCKETS - 1;
    let cum = 0;
    for (let b = 0; b < NUM_BUCKETS; b++) {
      cum += this.bucketMass[b]!;
      if (cum >= target) {
        last = b;
        break;
      }
    }
    // Only tokens up to that bucket can be in the nucleus; sort just those.
    let m = 0;
    for (let i = 0; i < count; i++) {
      const j = this.keptIds[i]!;
      if (this.bucketOf[j]! <= last) this.keptIds[m++] = j;
    }
    const sorted = this.keptIds.subarray(0, m);
    const w = this.weightOf;
    sorted.sort((a, b) => w[b]! - w[a]! || a - b);
    // The nucleus is the shortest prefix reaching the target. Summation order can leave the sum of
    // all m a rounding error short of it; then all m stay.
    let keep = m;
    cum = 0;
    for (let i = 0; i < m; i++) {
      const wi = w[sorted[i]!]!;
      this.keptWeights[i] = wi;
      cum += wi;
      if (cum >= target) {
        keep = i + 1;
        break;
      }
    }
    this.keptCount = keep;
  }

  /** Step 8: one uniform draw, walked along the kept weights. */
  private draw(): number {
    const n = this.keptCount;
    let total = 0;
    for (let i = 0; i < n; i++) total += this.keptWeights[i]!;
    const u = this.rng.next() * total;
    let cum = 0;
    for (let i = 0; i < n; i++) {
      cum += this.keptWeights[i]!;
      if (u < cum) return this.keptIds[i]!;
    }
    return this.keptIds[n - 1]!; // u within rounding of the total
  }

  private checkToken(t: number): number {
    if (!(Number.isInteger(t) && t >= 0 && t < this.vocabSize)) {
      throw new RangeError(`token id ${t} is outside the vocabulary [0, ${this.vocabSize})`);
    }
    return t;
  }
}

// ---------------------------------------------------------------------------
// Helpers, exported for tests.

/** Index of the largest value; ties go to the lowest index (or lowest id, when `ids` is given). NaN throws. */
export function argmaxOf(logits: ArrayLike<number>, ids?: ArrayLike<number>): number {
  let best = -1;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (Number.isNaN(v)) throw new RangeError(`logit ${i} is NaN`);
    const better = best < 0 || v > bestValue || (v === bestValue && ids !== undefined && ids[i]! < ids[best]!);
    if (better) {
      best = i;
      bestValue = v;
    }
  }
  if (best < 0) throw new RangeError('no logits to choose from');
  checkRowMax(bestValue);
  return best;
}

/** The k best tokens (highest logit, ties to the lower id), written best first into `out` (k = out.length). */
export function selectTopK(logits: ArrayLike<number>, out: Uint32Array): void {
  const k = out.length;
  // `worse(a, b)`: a ranks below b. The heap keeps the worst of the k best at its root, so each
  // new token costs one comparison unless it beats that root.
  const worse = (a: number, b: number) => logits[a]! < logits[b]! || (logits[a] === logits[b] && a > b);
  let size = 0;
  for (let j = 0; j < logits.length; j++) {
    const v = logits[j]!;
    if (Number.isNaN(v)) throw new RangeError(`logit ${j} is NaN`);
    if (size < k) {
      // Sift up.
      let i = size++;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!worse(j, out[parent]!)) break;
        out[i] = out[parent]!;
        i = parent;
      }
      out[i] = j;
    } else if (worse(out[0]!, j)) {
      // Replace the root and sift down.
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= k) break;
        const r = l + 1;
        const child = r < k && worse(out[r]!, out[l]!) ? r : l;
        if (!worse(out[child]!, j)) break;
        out[i] = out[child]!;
        i = child;
      }
      out[i] = j;
    }
  }
  if (size < k) throw new RangeError(`top_k ${k} exceeds the ${logits.length} logits`);
  out.sort((a, b) => (worse(a, b) ? 1 : worse(b, a) ? -1 : 0));
}

/**
 * Sets every logit outside `allowed` to -Infinity (in place). Empty `allowed` throws: a
 * constraint that allows nothing is a bug upstream, not something to sample around.
 */
export function applyMask(logits: Float32Array, allowed: ArrayLike<number>): void {
  if (allowed.length === 0) throw new RangeError('the token constraint allows no token');
  const kept = new Float32Array(allowed.length);
  for (let i = 0; i < allowed.length; i++) {
    const id = allowed[i]!;
    if (!(id >= 0 && id < logits.length)) throw new RangeError(`allowed token id ${id} is outside the vocabulary [0, ${logits.length})`);
    kept[i] = logits[id]!;
  }
  logits.fill(-Infinity);
  for (let i = 0; i < allowed.length; i++) logits[allowed[i]!] = kept[i]!;
}

/** Largest value of a row; NaN throws. */
function maxOf(logits: ArrayLike<number>): number {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (v > m) m = v;
    else if (Number.isNaN(v)) throw new RangeError(`logit ${i} is NaN`);
  }
  return m;
}

/** The largest logit must be finite: all -Infinity leaves nothing to draw, +Infinity breaks the softmax. */
function checkRowMax(max: number): number {
  if (!Number.isFinite(max)) throw new RangeError(`the largest logit must be finite; got ${max}`);
  return max;
}
