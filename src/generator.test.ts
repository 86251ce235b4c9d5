/**
 * The scheduler (Generator over MistralModel.step) under load, on the bundled tiny model: 32
 * seeded requests of mixed prompts, lengths and sampling joining at random times, some aborted,
 * each answered exactly as it is alone; decode steps as wide as the running streams.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Generator, type GenerationEvent } from './generator.ts';
import { validateSamplingParams, type SamplingParams } from './sampling/params.ts';
import type { StepSequence } from './model/model.ts';
import type { BatchShape } from './kernels/matmul/index.ts';
import { Rng } from './util/rng.ts';
import { freshSeed } from './util/testing.ts';

const seed = freshSeed();
const rng = new Rng(seed);
const int = (lo: number, hi: number) => lo + Math.floor(rng.next() * (hi - lo + 1));

let gen: Generator;
/** The widest decode step the model ran since the last reset. */
let widestDecode = 0;

beforeAll(async () => {
  gen = await Generator.load({ maxBatch: 32 });
  const model = gen.model;
  const step = model.step.bind(model);
  model.step = (batch: readonly StepSequence[], kind: BatchShape, adapter) => {
    if (kind === 'decode') widestDecode = Math.max(widestDecode, batch.length);
    return step(batch, kind, adapter);
  };
});
afterAll(() => gen?.close());

interface Job {
  prompt: number[];
  params: SamplingParams;
  /** Milliseconds after the start that it is sent. */
  delay: number;
  /** Aborted once it has produced this many text events (undefined: runs to its end). */
  abortAfter?: number;
}

/** The tokens and finish reason of one request; `abortAfter` text events and it aborts. */
async function run(job: Job): Promise<{ tokens: number[]; finish: string }> {
  const controller = new AbortController();
  let texts = 0;
  let done: Extract<GenerationEvent, { type: 'done' }> | undefined;
  for await (const ev of gen.generate(job.prompt, job.params, controller.signal)) {
    if (ev.type === 'text' && job.abortAfter !== undefined && ++texts >= job.abortAfter) controller.abort();
    if (ev.type === 'done') done = ev;
  }
  return { tokens: done!.tokens, finish: done!.finishReason };
}

describe('scheduler under load (tiny model, max batch 32)', () => {
  it('32 seeded requests joining at random, 5 aborted mid-answer: each gets its solo answer (the aborted ones a prefix of it), in decode steps of up to 32 rows', async () => {
    const vocab = gen.model.config.vocab_size;
    const sampling = [
      { temperature: 0 },
      { temperature: 0.8 },
      { temperature: 1, top_k: 5 },
      { temperature: 0.7, top_p: 0.9, presence_penalty: 1 },
    ];
    const jobs: Job[] = Array.from({ length: 32 }, (_, i) => ({
      prompt: Array.from({ length: int(1, 60) }, () => int(3, vocab - 1)),
      params: validateSamplingParams({ seed: int(0, 2 ** 31), max_tokens: int(8, 40), ...sampling[i % sampling.length] }),
      delay: int(0, 400),
      abortAfter: i % 7 === 3 ? int(1, 4) : undefined,
    }));
    const solo: { tokens: number[]; finish: string }[] = [];
    for (const j of jobs) solo.push(await run({ ...j, abortAfter: undefined }));
    widestDecode = 0;
    const together = await Promise.all(
      jobs.map(async (j) => {
        await new Promise((r) => setTimeout(r, j.delay));
        return run(j);
      }),
    );
    jobs.forEach((j, i) => {
      const where = `request ${i}, seed ${seed}`;
      if (j.abortAfter === undefined) {
        expect(together[i], where).toEqual(solo[i]);
      } else {
        // Stopped after the token that completed its abortAfter-th text: what it had is its solo answer's start.
        expect(together[i]!.tokens, where).toEqual(solo[i]!.tokens.slice(0, together[i]!.tokens.length));
        expect(['cancelled', solo[i]!.finish], where).toContain(together[i]!.finish);
      }
    });
    expect(widestDecode, `decode steps ran ${widestDecode} rows at most: the streams did not decode together`).toBeGreaterThan(8);
    expect(gen.running + gen.queued).toBe(0);
  });
});
