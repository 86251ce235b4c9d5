/**
 * CPU-side microbenchmarks of the per-token work outside the GPU: sampling a
 * 32002-token row, stop-string matching, streaming detokenization, tokenizing
 * a prompt. Everything here runs once per generated token (or per request),
 * so it must stay far below a decode step (~0.4 s for a 1.1B model on lavapipe,
 * ~5 ms for the tiny one). Uses benchmark.js for statistically sound timing.
 *
 *   npx tsx bench/cpu.ts            (or: npm run bench:cpu)
 */
import Benchmark from 'benchmark';
import { Sampler } from '../src/sampling/sampler.ts';
import { DEFAULT_SAMPLING, type SamplingParams } from '../src/sampling/params.ts';
import { StopMatcher } from '../src/sampling/stop.ts';
import { OpenChatTokenizer } from '../src/tokenizer/index.ts';
import { Rng } from '../src/util/rng.ts';

const VOCAB = 32002;
const rng = new Rng(12345);
// A realistic row: most logits in a narrow band, a few tokens well ahead.
const row = new Float32Array(VOCAB).map(() => rng.normal() * 2);
for (let i = 0; i < 20; i++) row[rng.int(0, VOCAB)] = 8 + rng.normal();
const prompt = Array.from({ length: 512 }, () => rng.int(3, VOCAB));
const generated = Array.from({ length: 128 }, () => rng.int(3, VOCAB));
const scratch = new Float32Array(VOCAB);

const settings: Array<[string, Partial<SamplingParams>]> = [
  ['greedy', { temperature: 0 }],
  ['temperature 0.7', { temperature: 0.7 }],
  ['temperature 0.7, top_p 0.9', { temperature: 0.7, top_p: 0.9 }],
  ['temperature 0.7, top_k 40', { temperature: 0.7, top_k: 40 }],
  ['temperature 0.7, min_p 0.05', { temperature: 0.7, min_p: 0.05 }],
  ['temperature 0.7 + all penalties (640 tokens of history)', { temperature: 0.7, repetition_penalty: 1.1, presence_penalty: 0.5, frequency_penalty: 0.5 }],
];

const tokenizer = await OpenChatTokenizer.load();
const text = 'The quick brown fox jumps over the lazy dog. 天气很好！ 🦊 function f(x) { return x * 2; }\n'.repeat(20);
const ids = tokenizer.encode(text);

const suite = new Benchmark.Suite('cpu');
for (const [name, p] of settings) {
  const sampler = new Sampler({ ...DEFAULT_SAMPLING, ...p }, VOCAB, 1);
  suite.add(`sample: ${name}`, () => {
    scratch.set(row); // sample() may modify the row in place
    sampler.sample(scratch, { prompt, generated });
  });
}
suite.add('stop strings: push one token of text (4 stop strings)', () => {
  const m = new StopMatcher(['\n\nUser:', '</answer>', '###', 'STOP']);
  for (let i = 0; i < 64; i++) m.push(' word');
});
suite.add(`stream-decode ${ids.length} tokens`, () => {
  const d = tokenizer.createStreamDecoder();
  for (const id of ids) d.push(id);
  d.flush();
});
suite.add(`encode ${text.length} characters`, () => {
  tokenizer.encode(text);
});

suite
  .on('cycle', (ev: Benchmark.Event) => {
    const b = ev.target as Benchmark.Target & { stats: Benchmark.Stats; hz: number; name: string };
    const perOp = 1000 / b.hz;
    let note = '';
    if (b.name.startsWith('stop strings')) note = `  (${((perOp / 64) * 1000).toFixed(2)} us per token)`;
    if (b.name.startsWith('stream-decode')) note = `  (${((perOp / ids.length) * 1000).toFixed(2)} us per token)`;
    console.log(`${b.name.padEnd(66)} ${perOp.toFixed(3).padStart(9)} ms  ±${b.stats.rme.toFixed(1)}%${note}`);
  })
  .run();
