/**
 * Continuous batching benchmark: aggregate decode speed and time to first token with 1, 2, 4
 * and 8 concurrent streams through one Generator (the scheduler and MistralModel.step), beside
 * the one-at-a-time figure of the single-sequence path (MistralModel.forward, whose decode runs
 * the one-token matvec kernel). Prints numbers; never fails on speed.
 *
 *   npx tsx bench/batching.ts [MODEL_DIR] [--tokens N] [--prompt N] [--streams 1,2,4,8] [--rounds R]
 *
 * Figures:
 *  - aggregate decode tok/s at S streams: S requests start together (the same short prompt,
 *    different seeds, greedy off, no end-of-turn: max_tokens N each); the decode tokens of all
 *    (every token after each stream's first) over the time from the last stream's first token
 *    to the last stream's end, when all S decode together.
 *  - forward(): one sequence through the single-sequence path, argmax readout, N tokens.
 *  - TTFT: a request with a fresh `--prompt`-token prompt and max_tokens 1, alone, and again
 *    while S - 1 streams decode; wall time from the call to its first token.
 * Rounds are interleaved (every stream count once per round) so that drift in the machine's
 * load hits them alike; the table gives the median of the rounds.
 */
import { Generator, type GenerationEvent } from '../src/generator.ts';
import { validateSamplingParams } from '../src/sampling/params.ts';
import { Rng } from '../src/util/rng.ts';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : dflt;
};
const modelDir = args[0] && !args[0].startsWith('--') ? args[0] : undefined;
const tokens = Number(flag('--tokens', '32'));
const promptLength = Number(flag('--prompt', '48'));
const streamCounts = flag('--streams', '1,2,4,8').split(',').map(Number);
const rounds = Number(flag('--rounds', '3'));

const gen = await Generator.load({ modelDir, maxBatch: Math.max(...streamCounts) });
const vocab = gen.model.config.vocab_size;
const rng = new Rng(1234);
const randomPrompt = (n: number) => [1, ...Array.from({ length: n - 1 }, () => 2 + Math.floor(rng.next() * Math.min(vocab - 3, 31000)))];
const shortPrompt = randomPrompt(8);
// Greedy, as forward()'s argmax (a random-weight model rarely picks end-of-turn; the figures count what ran).
const params = (seed: number, max: number) => validateSamplingParams({ seed, max_tokens: max, temperature: 0 });

async function drain(it: AsyncGenerator<GenerationEvent>): Promise<{ done: Extract<GenerationEvent, { type: 'done' }>; firstAt: number; endAt: number }> {
  let firstAt = 0;
  for await (const ev of it) {
    if (ev.type === 'done') {
      const endAt = performance.now();
      firstAt ||= endAt - ev.timings.decodeSeconds * 1000;
      return { done: ev, firstAt: endAt - ev.timings.decodeSeconds * 1000, endAt };
    }
  }
  throw new Error('no done event');
}

/** S streams together: aggregate decode tok/s while all decode. */
async function together(S: number): Promise<number> {
  const runs = await Promise.all(Array.from({ length: S }, (_, i) => drain(gen.generate(shortPrompt, params(100 + i, tokens)))));
  const start = Math.max(...runs.map((r) => r.firstAt));
  const end = Math.max(...runs.map((r) => r.endAt));
  const decoded = runs.reduce((n, r) => n + r.done.timings.decodeTokens, 0);
  return decoded / ((end - start) / 1000);
}

/** The single-sequence path, one token per forward(): tok/s. */
async function forwardAlone(): Promise<number> {
  const model = gen.model;
  model.reset();
  let next = (await model.forward(shortPrompt, { kind: 'argmax' })).argmax!;
  const t0 = performance.now();
  for (let i = 1; i < tokens; i++) next = (await model.forward([next], { kind: 'argmax' })).argmax!;
  return (tokens - 1) / ((performance.now() - t0) / 1000);
}

/** TTFT of a new request, alone or while `busy` streams decode. */
async function ttft(busy: number): Promise<number> {
  const stop = new AbortController();
  const background = Array.from({ length: busy }, (_, i) => drain(gen.generate(shortPrompt, params(200 + i, 10 * tokens), stop.signal)));
  if (busy > 0) {
    // Wait until every background stream decodes.
    while (gen.running < busy) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50));
  }
  // A fresh prompt each time: one the pool still holds would be reused, not prefilled.
  const prompt = randomPrompt(promptLength);
  const t0 = performance.now();
  await drain(gen.generate(prompt, params(7, 1)));
  const seconds = (performance.now() - t0) / 1000;
  stop.abort();
  await Promise.all(background);
  return seconds;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results = new Map<string, number[]>();
const record = (key: string, v: number) => results.set(key, [...(results.get(key) ?? []), v]);

console.log(`model ${gen.modelName}, ${gen.model.config.num_hidden_layers} layers, hidden ${gen.model.config.hidden_size}; ${tokens} tokens per stream, TTFT prompt ${promptLength} tokens; ${rounds} rounds`);
await together(1); // warm-up: compile every pipeline
await forwardAlone();
for (let r = 0; r < rounds; r++) {
  record('forward', await forwardAlone());
  for (const S of streamCounts) record(`streams ${S}`, await together(S));
  record('ttft alone', await ttft(0));
  const busy = Math.max(...streamCounts) - 1;
  record(`ttft beside ${busy}`, await ttft(busy));
  console.log(`round ${r + 1}: ` + [...results].map(([k, v]) => `${k} ${v.at(-1)!.toFixed(2)}`).join(', '));
}
const fwd = median(results.get('forward')!);
const one = median(results.get('streams 1')!);
console.log(`\n| figure | median | ratio |\n|---|---:|---|`);
console.log(`| one at a time, forward() (matvec) | ${fwd.toFixed(2)} tok/s | 1 |`);
for (const S of streamCounts) {
  const v = median(results.get(`streams ${S}`)!);
  console.log(`| ${S} stream${S > 1 ? 's' : ''}, step() | ${v.toFixed(2)} tok/s | ${(v / one).toFixed(2)}x of 1 stream, ${(v / fwd).toFixed(2)}x of forward() |`);
}
const alone = median(results.get('ttft alone')!);
for (const [k, v] of results) if (k.startsWith('ttft')) console.log(`| TTFT ${k.slice(5)} | ${median(v).toFixed(2)} s | ${(median(v) / alone).toFixed(2)}x of alone |`);
console.log(`(all rounds: ${JSON.stringify(Object.fromEntries([...results].map(([k, v]) => [k, v.map((x) => +x.toFixed(3))])))})`);
gen.close();
