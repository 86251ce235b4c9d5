/**
 * `openchat bench`'s harness on the bundled tiny model, through the Generator: the streams
 * figures are finite and positive and their counts are those of the requests sent, a pool too
 * small for the largest stream count still runs (the rest queue), and --profile names the kernels
 * of both step kinds. Then the pure parts: token arrivals from text events, the aggregate window,
 * the percentiles. Nothing here asserts a speed.
 */
import { describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/device.ts';
import { BUNDLED_MODEL_DIR } from '../src/generator.ts';
import { OpenChatTokenizer } from '../src/tokenizer/index.ts';
import { freshSeed } from '../src/util/testing.ts';
import { formatResult, quantile, runBenchmark, streamsRound, tokenArrivals, type BenchOptions, type BenchResult, type Observed } from './e2e.ts';

const seed = freshSeed();
const options: BenchOptions = { promptLengths: [8, 20], decodeTokens: 4, decodePrompt: 10, seed, copyBytes: 4 * 2 ** 20, streams: [1, 3] };

function expectConsistentStreams(r: BenchResult, pool: number): void {
  expect(r.streams.map((s) => s.streams)).toEqual([1, 3]);
  expect(r.model.maxBatch).toBe(3);
  expect(r.model.sequences).toBe(pool);
  for (const s of r.streams) {
    const at = `${s.streams} streams (seed ${seed}): ${JSON.stringify(s)}`;
    expect(s.concurrent, at).toBe(Math.min(s.streams, pool));
    expect(s.promptTokens, at).toBe(10);
    expect(s.maxTokens, at).toBe(5);
    expect(s.requests, at).toBe(s.streams);
    // Greedy requests without stop strings end at max_tokens unless an end-of-turn token comes first.
    if (s.stoppedEarly === 0) expect(s.completionTokens, at).toBe(s.requests * s.maxTokens);
    expect(s.completionTokens, at).toBeLessThanOrEqual(s.requests * s.maxTokens);
    expect(s.ttftSamples, at).toBe(s.requests);
    expect(s.itlSamples, at).toBe(s.completionTokens - s.requests);
    expect(s.rounds, at).toHaveLength(1);
    const round = s.rounds[0]!;
    expect(round.decodeTokens, at).toBeGreaterThan(0);
    expect(round.decodeTokens, at).toBeLessThanOrEqual(s.itlSamples);
    expect(round.seconds, at).toBeGreaterThan(0);
    expect(s.aggregateDecodeTokensPerSecond, at).toBeCloseTo(round.tokensPerSecond, 9);
    for (const x of [s.aggregateDecodeTokensPerSecond, s.ttftMs.p50, s.ttftMs.p99, s.itlMs.p99]) {
      expect(Number.isFinite(x) && x > 0, at).toBe(true);
    }
    expect(s.itlMs.p50, at).toBeGreaterThanOrEqual(0);
    expect(s.ttftMs.p99, at).toBeGreaterThanOrEqual(s.ttftMs.p50);
    expect(s.itlMs.p99, at).toBeGreaterThanOrEqual(s.itlMs.p50);
    if (s.streams === 1 || s.streams > pool) expect(s.ttftBesideMs, at).toBeNull();
    else if (s.ttftBesideMs !== null) expect(Number.isFinite(s.ttftBesideMs) && s.ttftBesideMs > 0, at).toBe(true);
  }
  // One stream alone always decodes the whole interval it is measured over.
  expect(r.streams[0]!.rounds[0]!.window).toBe('all decoding');
  expect(r.plans[0]!.streams).toEqual(r.streams);
}

describe(`openchat bench through the Generator (seed ${seed})`, () => {
  it('--streams 1,3 on the tiny model: figures finite and positive, counts those of the requests sent; --profile shows both step kinds', async () => {
    const gpu = await getGpu();
    const r = await runBenchmark(gpu, BUNDLED_MODEL_DIR, { ...options, profileTokens: 2 });
    expectConsistentStreams(r, 3);
    expect(r.prefill.map((p) => p.promptTokens)).toEqual([8, 20]);
    for (const f of [r.load, r.decode.tokensPerSecond, ...r.prefill.flatMap((p) => [p.timeToFirstToken, p.tokensPerSecond])]) {
      expect(f.measured > 0 && f.limit > 0 && Number.isFinite(f.ratio), JSON.stringify(f)).toBe(true);
    }
    const p20 = r.prefill[1]!;
    expect(p20.tokensPerSecond.measured * p20.timeToFirstToken.measured).toBeCloseTo(20, 6);
    expect(r.decode.tokens).toBe(4);
    if (r.streams[0]!.stoppedEarly === 0) expect(r.decode.samples).toHaveLength(4);

    const profile = r.profile!;
    expect(profile.map((p) => p.kind)).toEqual(['prefill', 'decode']);
    const [prefill, decode] = profile;
    expect(prefill!.tokens).toBe(10);
    expect(prefill!.steps).toHaveLength(Math.ceil(10 / r.model.maxChunk));
    expect(decode!.steps).toHaveLength(decode!.tokens);
    if (r.streams[0]!.stoppedEarly === 0) expect(decode!.tokens).toBe(2);
    for (const p of profile) {
      expect(p.kernels.length, p.kind).toBeGreaterThan(0);
      expect(p.wallSeconds).toHaveLength(p.steps.length);
      // Every timed dispatch of the kind's steps is in its kernel lines, and no other.
      expect(p.kernels.reduce((n, k) => n + k.calls, 0)).toBe(p.steps.reduce((n, s) => n + s.dispatches - s.untimed, 0));
    }

    const table = formatResult(r);
    expect(table).toMatch(/^\| 3 \| 3 \| [\d.]+( \(a\))? \| [\d.]+ ms \| [\d.]+ ms \| [\d.]+ ms \| [\d.]+ ms \| ([\d.]+ ms|-) \|$/m);
    expect(table).toContain('GPU time per kernel, the prefill of a 10-token prompt');
  });

  it('runs all the streams when the KV-cache pool holds fewer: the rest queue', async () => {
    const gpu = await getGpu();
    // One region's bytes at the context these options need, from a run that needs one region.
    const first = await runBenchmark(gpu, BUNDLED_MODEL_DIR, { ...options, streams: [1] });
    expect(first.model.sequences).toBe(1);
    const region = first.model.kvCacheBytes;
    const lines: string[] = [];
    const r = await runBenchmark(gpu, BUNDLED_MODEL_DIR, { ...options, kvCacheGb: (2.5 * region) / 2 ** 30, log: (l) => lines.push(l) });
    expect(r.model.contextLength).toBe(first.model.contextLength);
    expectConsistentStreams(r, 2);
    expect(lines.filter((l) => /^streams 3: the KV-cache pool holds 2 sequences .* so 1 of the 3 requests queue/.test(l)), lines.join('\n')).toHaveLength(1);
    expect(formatResult(r)).toContain('3 streams: the KV-cache pool holds 2, so 1 requests queued');
  });
});

describe('token arrivals, the aggregate window and percentiles', () => {
  it('a token arrives with the text event that completes it; a character split over byte tokens arrives whole', async () => {
    const tokenizer = await OpenChatTokenizer.load(BUNDLED_MODEL_DIR);
    const tokens = tokenizer.encode('a \u{1F9EC} b'); // the emoji is four byte-fallback tokens: its text comes with the last
    const decoder = tokenizer.createStreamDecoder({ skipSpecial: true });
    const texts: Observed['texts'] = [];
    const completes: number[] = [];
    tokens.forEach((t, j) => {
      const text = decoder.push(t);
      if (text) {
        texts.push({ text, at: 100 + 10 * j });
        completes.push(j);
      }
    });
    const tail = decoder.flush();
    if (tail) {
      texts.push({ text: tail, at: 100 + 10 * tokens.length });
      completes.push(tokens.length - 1);
    }
    expect(texts.length, JSON.stringify(texts)).toBeLessThan(tokens.length);
    const done: Observed['done'] = {
      type: 'done',
      finishReason: 'length',
      tokens,
      seed: 0,
      usage: { prompt_tokens: 1, completion_tokens: tokens.length, total_tokens: tokens.length + 1 },
      timings: { promptTokens: 1, reusedTokens: 0, timeToFirstToken: 0, prefillTokensPerSecond: 0, decodeTokens: 0, decodeSeconds: 0, decodeTokensPerSecond: 0 },
    };
    const at = tokenArrivals(tokenizer, { sentAt: 0, texts, done, doneAt: 999 });
    expect(at).toHaveLength(tokens.length);
    // Each token arrives with the first event at or after it.
    tokens.forEach((_, j) => expect(at[j], `token ${j}`).toBe(100 + 10 * completes.find((c) => c >= j)!));
    expect(() => tokenArrivals(tokenizer, { sentAt: 0, texts: texts.slice(1), done, doneAt: 999 })).toThrow(/not what its \d+ tokens decode to/);
    tokenizer.close();
  });

  it('aggregates over the time all streams decode, or over the whole run when they never do', () => {
    // From 5 (the last first token) to 30 (the first last token): 3 + 2 decode tokens in 25 ms.
    expect(streamsRound([[0, 10, 20, 30], [5, 15, 25, 35]])).toEqual({ tokensPerSecond: 200, decodeTokens: 5, seconds: 0.025, window: 'all decoding' });
    // The second stream started after the first ended (it queued): 4 decode tokens in 12 ms.
    const queued = streamsRound([[0, 1, 2], [10, 11, 12]]);
    expect(queued.window).toBe('whole run');
    expect(queued.decodeTokens).toBe(4);
    expect(queued.tokensPerSecond).toBeCloseTo(4 / 0.012, 9);
  });

  it('interpolates percentiles between ranks', () => {
    expect(quantile([4, 1, 3, 2], 0.5)).toBe(2.5);
    expect(quantile([1, 2, 3, 4], 0.99)).toBeCloseTo(3.97, 12);
    expect(quantile([7], 0.99)).toBe(7);
  });
});
