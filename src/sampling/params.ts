/**
 * Sampling parameters: their names, defaults and allowed ranges follow the
 * OpenAI-style chat/completions APIs that serve OpenChat 3.5 today (OpenAI for
 * temperature/top_p/penalties/seed/stop/n, vLLM and Hugging Face for top_k,
 * min_p and repetition_penalty).
 *
 * `validateSamplingParams` is the one gate for untrusted input (an HTTP JSON
 * body, CLI flags): everything after it may assume the ranges below hold.
 */
import { getRandomValues } from 'node:crypto';
import { foldSeed } from './sampler.ts';

export interface SamplingParams {
  /** Softmax temperature, [0, 2]. 0 means greedy (argmax). */
  temperature: number;
  /** Nucleus sampling, (0, 1]: keep the smallest set of most likely tokens whose mass reaches top_p. 1 is off. */
  top_p: number;
  /** Keep only the k most likely tokens, [0, 1000]. 0 is off. */
  top_k: number;
  /** Keep tokens with p >= min_p * p_max, [0, 1]. 0 is off. */
  min_p: number;
  /** Hugging Face multiplicative penalty over tokens seen in prompt and output, [0.01, 5]. 1 is off. */
  repetition_penalty: number;
  /** OpenAI additive penalty for every generated token already present, [-2, 2]. 0 is off. */
  presence_penalty: number;
  /** OpenAI additive penalty proportional to a generated token's count, [-2, 2]. 0 is off. */
  frequency_penalty: number;
  /** Seed for the sampler's PRNG; null: draw one (see `drawSeed`) and report it. */
  seed: number | null;
  /** Upper bound on generated tokens (>= 1); null: up to the end of the context. */
  max_tokens: number | null;
  /** Up to 16 non-empty strings; generation ends before the first one appears in the decoded text. */
  stop: string[];
  /** Number of independent samples (choices), [1, 4]. */
  n: number;
}

export const MAX_TOP_K = 1000;
export const MAX_STOP_STRINGS = 16;
export const MAX_N = 4;

/** OpenAI's defaults: plain sampling at temperature 1, every filter and penalty off. */
export const DEFAULT_SAMPLING: SamplingParams = Object.freeze({
  temperature: 1,
  top_p: 1,
  top_k: 0,
  min_p: 0,
  repetition_penalty: 1,
  presence_penalty: 0,
  frequency_penalty: 0,
  seed: null,
  max_tokens: null,
  stop: Object.freeze([]) as unknown as string[], // frozen so that nobody edits the shared default by accident
  n: 1,
});

/** A request's sampling parameter is of the wrong type or out of range. `field` names it. */
export class SamplingParamError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = 'SamplingParamError';
    this.field = field;
  }
}

/**
 * Checks untrusted input and fills in defaults. Unknown keys are ignored (the
 * server decides whether to reject them); a key that is null or undefined takes
 * its default. Types are strict: "0.7" (a string) is not a number, so a CLI must
 * parse its flags before calling this.
 */
/** A numeric parameter's allowed interval (closed unless openLow). */
export interface Range {
  lo: number;
  hi: number;
  openLow?: boolean;
}

export type SamplingRanges = Record<'temperature' | 'top_p' | 'top_k' | 'min_p' | 'repetition_penalty' | 'presence_penalty' | 'frequency_penalty' | 'seed', Range>;

/** The largest seed: OpenAI takes a signed 64-bit seed (JSON parsing rounds 2^63 - 1 up to 2^63, so that is accepted). */
export const MAX_SEED = 2 ** 63;

/** OpenAI's ranges (vLLM's and Hugging Face's for top_k, min_p, repetition_penalty). */
export const SAMPLING_RANGES: Readonly<SamplingRanges> = Object.freeze({
  temperature: { lo: 0, hi: 2 },
  top_p: { lo: 0, hi: 1, openLow: true },
  top_k: { lo: 0, hi: MAX_TOP_K },
  min_p: { lo: 0, hi: 1 },
  repetition_penalty: { lo: 0.01, hi: 5 },
  presence_penalty: { lo: -2, hi: 2 },
  frequency_penalty: { lo: -2, hi: 2 },
  seed: { lo: -(2 ** 53 - 1), hi: MAX_SEED },
});

export function validateSamplingParams(
  input: Record<string, unknown>,
  defaults: SamplingParams = DEFAULT_SAMPLING,
  ranges: Readonly<SamplingRanges> = SAMPLING_RANGES,
): SamplingParams {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new TypeError(`sampling parameters must be an object; got ${describe(input)}`);
  }
  const given = (key: string): unknown => (Object.hasOwn(input, key) ? input[key] : undefined);
  const pick = <T>(key: keyof SamplingParams, check: (field: string, value: unknown) => T, fallback: T): T => {
    const value = given(key);
    return value === undefined || value === null ? fallback : check(key, value);
  };

  return {
    temperature: pick('temperature', (f, v) => numberIn(f, v, ranges.temperature), defaults.temperature),
    top_p: pick('top_p', (f, v) => numberIn(f, v, ranges.top_p), defaults.top_p),
    top_k: pick('top_k', (f, v) => integerIn(f, v, ranges.top_k.lo, ranges.top_k.hi), defaults.top_k),
    min_p: pick('min_p', (f, v) => numberIn(f, v, ranges.min_p), defaults.min_p),
    repetition_penalty: pick('repetition_penalty', (f, v) => numberIn(f, v, ranges.repetition_penalty), defaults.repetition_penalty),
    presence_penalty: pick('presence_penalty', (f, v) => numberIn(f, v, ranges.presence_penalty), defaults.presence_penalty),
    frequency_penalty: pick('frequency_penalty', (f, v) => numberIn(f, v, ranges.frequency_penalty), defaults.frequency_penalty),
    seed: pick<number | null>('seed', (f, v) => checkSeed(f, v, ranges.seed), defaults.seed),
    max_tokens: pick<number | null>('max_tokens', checkMaxTokens, defaults.max_tokens),
    stop: pick('stop', checkStop, [...defaults.stop]),
    n: pick('n', (f, v) => integerIn(f, v, 1, MAX_N), defaults.n),
  };
}

/**
 * A fresh seed from the operating system's CSPRNG, for requests that give none.
 * The caller reports it (e.g. in the response) so the run can be replayed.
 * 32 bits: the sampler's PRNG state is seeded from 32 bits anyway (see foldSeed).
 */
export function drawSeed(): number {
  return getRandomValues(new Uint32Array(1))[0]!;
}

/** The seed a request runs with: its own, or a freshly drawn one. */
export function resolveSeed(params: SamplingParams): number {
  return params.seed ?? drawSeed();
}

/**
 * The seed of sample `index` of a request seeded with `seed` (choice i of `n`, turn t of a chat):
 * seed + index, so sample 0 is what the seed gives alone and sample i replays on its own with
 * seed + i. Past 2^53 - 1 it wraps round to -(2^53 - 1), so every seed has a successor. A seed
 * above 2^53 (up to 2^63, as the hosted APIs take) is a double whose seed + i would round back to
 * itself: its samples i > 0 step from its 32-bit fold instead (foldSeed(seed) + i).
 */
export function sampleSeed(seed: number, index: number): number {
  if (index === 0) return seed;
  if (!Number.isSafeInteger(seed)) return foldSeed(seed) + index;
  const max = Number.MAX_SAFE_INTEGER;
  // seed + index - (2 max + 1), grouped so that every partial result is exact.
  return seed > max - index ? seed - max + (index - max - 1) : seed + index;
}

// ---------------------------------------------------------------------------

function numberIn(field: string, value: unknown, { lo, hi, openLow }: Range): number {
  const ok =
    typeof value === 'number' && Number.isFinite(value) && (openLow ? value > lo : value >= lo) && value <= hi;
  if (!ok) {
    const range = `${openLow ? '(' : '['}${lo}, ${hi}]`;
    throw new SamplingParamError(field, `${field} must be a number in ${range}; got ${describe(value)}`);
  }
  return value;
}

function integerIn(field: string, value: unknown, lo: number, hi: number): number {
  if (!(typeof value === 'number' && Number.isInteger(value) && value >= lo && value <= hi)) {
    throw new SamplingParamError(field, `${field} must be an integer in [${lo}, ${hi}]; got ${describe(value)}`);
  }
  return value;
}

/**
 * An integer seed within `range`. A JSON number in JavaScript is exact up to 2^53; larger seeds
 * (the hosted APIs take any non-negative 64-bit one) arrive as the nearest double, and the
 * sampler folds them to its 32-bit PRNG seed from that double (foldSeed), so the same request
 * replays the same way.
 */
function checkSeed(field: string, value: unknown, range: Range): number {
  if (!(typeof value === 'number' && Number.isInteger(value) && value >= range.lo && value <= range.hi)) {
    const show = (x: number) => (x === MAX_SEED ? '2^63' : x === -(2 ** 53 - 1) ? '-(2^53 - 1)' : String(x));
    throw new SamplingParamError(field, `${field} must be an integer in [${show(range.lo)}, ${show(range.hi)}]; got ${describe(value)}`);
  }
  return value;
}

/** No upper bound here: the generator caps it by what is left of the context. */
function checkMaxTokens(field: string, value: unknown): number {
  if (!(typeof value === 'number' && Number.isSafeInteger(value) && value >= 1)) {
    throw new SamplingParamError(field, `${field} must be an integer >= 1; got ${describe(value)}`);
  }
  return value;
}

/** A single string or an array of up to 16 strings, none empty (an empty stop string would match at once). */
function checkStop(field: string, value: unknown): string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list)) {
    throw new SamplingParamError(
      field,
      `${field} must be a non-empty string or an array of up to ${MAX_STOP_STRINGS} non-empty strings; got ${describe(value)}`,
    );
  }
  if (list.length > MAX_STOP_STRINGS) {
    throw new SamplingParamError(
      field,
      `${field} must have at most ${MAX_STOP_STRINGS} strings; got ${list.length}`,
    );
  }
  list.forEach((s: unknown, i: number) => {
    if (typeof s !== 'string' || s.length === 0) {
      const where = typeof value === 'string' ? field : `${field}[${i}]`;
      throw new SamplingParamError(field, `${where} must be a non-empty string; got ${describe(s)}`);
    }
  });
  return [...(list as string[])];
}

/** How a rejected value is shown in an error message: its value, plus its type where that is the problem. */
function describe(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') {
    const shown = value.length > 40 ? `${value.slice(0, 40)}...` : value;
    return `${JSON.stringify(shown)} (a string)`;
  }
  if (typeof value === 'boolean') return `${value} (a boolean)`;
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}
