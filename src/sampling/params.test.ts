import { describe, expect, it } from 'vitest';
import {
  DEFAULT_SAMPLING,
  MAX_STOP_STRINGS,
  SamplingParamError,
  drawSeed,
  resolveSeed,
  sampleSeed,
  validateSamplingParams,
} from './params.ts';

/** The error validateSamplingParams throws for `input`, or a failure if it accepts it. */
function rejection(input: Record<string, unknown>): SamplingParamError {
  try {
    validateSamplingParams(input);
  } catch (e) {
    expect(e).toBeInstanceOf(SamplingParamError);
    return e as SamplingParamError;
  }
  throw new Error(`accepted ${JSON.stringify(input)}`);
}

describe('validateSamplingParams', () => {
  it('fills in the defaults (DEFAULT_SAMPLING, the one table of them), every field', () => {
    const p = validateSamplingParams({});
    expect(p).toEqual(DEFAULT_SAMPLING);
    for (const [field, value] of Object.entries(p)) expect(value, field).not.toBeUndefined();
  });

  it('treats null and undefined as "default", and takes caller defaults', () => {
    const mine = { ...DEFAULT_SAMPLING, temperature: 0.7, stop: ['</s>'], max_tokens: 64 };
    const p = validateSamplingParams({ temperature: null, top_p: undefined, stop: null, n: 2 }, mine);
    expect(p).toEqual({ ...mine, n: 2 });
    // The result owns its stop list: editing it leaves the defaults alone.
    p.stop.push('x');
    expect(mine.stop).toEqual(['</s>']);
    expect(DEFAULT_SAMPLING.stop).toEqual([]);
  });

  it('ignores unknown keys', () => {
    expect(validateSamplingParams({ model: 'openchat_3.5', logit_bias: {}, temperature: 0.5 }).temperature).toBe(0.5);
  });

  it('accepts every bound of every range', () => {
    const lows = {
      temperature: 0, top_p: Number.MIN_VALUE, top_k: 0, min_p: 0, repetition_penalty: 0.01,
      presence_penalty: -2, frequency_penalty: -2, seed: -Number.MAX_SAFE_INTEGER, max_tokens: 1, n: 1,
    };
    const highs = {
      temperature: 2, top_p: 1, top_k: 1000, min_p: 1, repetition_penalty: 5,
      presence_penalty: 2, frequency_penalty: 2, seed: Number.MAX_SAFE_INTEGER, max_tokens: 1e9, n: 4,
    };
    expect(validateSamplingParams(lows)).toEqual({ ...DEFAULT_SAMPLING, ...lows });
    expect(validateSamplingParams(highs)).toEqual({ ...DEFAULT_SAMPLING, ...highs });
  });

  it('names the field, its range and the value in the error', () => {
    expect(rejection({ temperature: 3 }).message).toBe('temperature must be a number in [0, 2]; got 3');
    const cases: [string, unknown, string][] = [
      ['temperature', -0.1, 'temperature must be a number in [0, 2]; got -0.1'],
      ['temperature', Number.NaN, 'temperature must be a number in [0, 2]; got NaN'],
      ['temperature', '0.7', 'temperature must be a number in [0, 2]; got "0.7" (a string)'],
      ['top_p', 0, 'top_p must be a number in (0, 1]; got 0'],
      ['top_p', 1.01, 'top_p must be a number in (0, 1]; got 1.01'],
      ['top_k', -1, 'top_k must be an integer in [0, 1000]; got -1'],
      ['top_k', 1001, 'top_k must be an integer in [0, 1000]; got 1001'],
      ['top_k', 2.5, 'top_k must be an integer in [0, 1000]; got 2.5'],
      ['min_p', 1.5, 'min_p must be a number in [0, 1]; got 1.5'],
      ['min_p', true, 'min_p must be a number in [0, 1]; got true (a boolean)'],
      ['repetition_penalty', 0, 'repetition_penalty must be a number in [0.01, 5]; got 0'],
      ['repetition_penalty', 5.5, 'repetition_penalty must be a number in [0.01, 5]; got 5.5'],
      ['presence_penalty', -2.5, 'presence_penalty must be a number in [-2, 2]; got -2.5'],
      ['frequency_penalty', Infinity, 'frequency_penalty must be a number in [-2, 2]; got Infinity'],
      ['seed', 1.5, 'seed must be an integer in [-(2^53 - 1), 2^63]; got 1.5'],
      ['seed', 2 ** 64, `seed must be an integer in [-(2^53 - 1), 2^63]; got ${2 ** 64}`],
      ['max_tokens', 0, 'max_tokens must be an integer >= 1; got 0'],
      ['max_tokens', [16], 'max_tokens must be an integer >= 1; got an array'],
      ['n', 5, 'n must be an integer in [1, 4]; got 5'],
      ['n', 0, 'n must be an integer in [1, 4]; got 0'],
      ['stop', '', 'stop must be a non-empty string; got "" (a string)'],
      ['stop', ['a', ''], 'stop[1] must be a non-empty string; got "" (a string)'],
      ['stop', ['a', 7], 'stop[1] must be a non-empty string; got 7'],
      ['stop', { s: 'a' }, 'stop must be a non-empty string or an array of up to 16 non-empty strings; got an object'],
    ];
    for (const [field, value, message] of cases) {
      const e = rejection({ [field]: value });
      expect(e.field, `${field} = ${String(value)}`).toBe(field);
      expect(e.message).toBe(message);
    }
  });

  it('takes a single stop string or up to 16', () => {
    expect(validateSamplingParams({ stop: '<|end_of_turn|>' }).stop).toEqual(['<|end_of_turn|>']);
    const many = Array.from({ length: MAX_STOP_STRINGS }, (_, i) => `s${i}`);
    expect(validateSamplingParams({ stop: many }).stop).toEqual(many);
    expect(rejection({ stop: [...many, 'one more'] }).message).toBe('stop must have at most 16 strings; got 17');
  });

  it('rejects input that is not an object', () => {
    expect(() => validateSamplingParams(null as unknown as Record<string, unknown>)).toThrow(/must be an object/);
    expect(() => validateSamplingParams([] as unknown as Record<string, unknown>)).toThrow(/must be an object/);
  });
});

describe('seeds', () => {
  it('keeps a given seed and draws a 32-bit one otherwise', () => {
    expect(resolveSeed({ ...DEFAULT_SAMPLING, seed: 42 })).toBe(42);
    const drawn = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const s = resolveSeed(DEFAULT_SAMPLING);
      expect(Number.isInteger(s) && s >= 0 && s < 2 ** 32, `seed ${s}`).toBe(true);
      drawn.add(s);
    }
    // Eight draws from 2^32 values collide with probability < 1e-8.
    expect(drawn.size).toBe(8);
    expect(Number.isInteger(drawSeed())).toBe(true);
  });

  it('sample i of a seeded request runs with seed + i, wrapping past 2^53 - 1', () => {
    const max = Number.MAX_SAFE_INTEGER;
    for (const s of [0, 7, -3, 2 ** 40]) expect([0, 1, 2, 3].map((i) => sampleSeed(s, i))).toEqual([s, s + 1, s + 2, s + 3]);
    expect([0, 1, 2, 3].map((i) => sampleSeed(max - 1, i))).toEqual([max - 1, max, -max, -max + 1]);
    for (let i = 0; i < 4; i++) expect(Number.isSafeInteger(sampleSeed(max, i))).toBe(true);
  });
});
