/**
 * Batched steps (continuous batching) on the tiny golden model: a sequence's logits are the
 * same bit for bit alone and beside other sequences (joining, prefilling in chunks, decoding),
 * and agree with the single-sequence forward pass (itself pinned to Hugging Face's logits).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { MistralModel, STEP_PREFILL_TOKENS, type StepSequence } from './model.ts';
import { formatPlan, resolvePlan, runnable, type KernelPlan } from '../kernels/plan.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxRelError } from '../util/testing.ts';

const GOLDEN = new URL('../../golden/tiny-mistral/', import.meta.url).pathname;
const seed = freshSeed();
const rng = new Rng(seed);
const randomIds = (n: number) => Array.from({ length: n }, () => 1 + Math.floor(rng.next() * 31999));

/**
 * Runs each sequence's tokens through steps, as the scheduler does: from round `join` on, its
 * prompt in chunks of `chunk` (or fewer) in a prefill step, then one token per decode step;
 * each round runs a prefill step for those prefilling, then a decode step for the others.
 * Returns the logits of every step's last row, per sequence.
 */
async function play(model: MistralModel, seqs: { prompt: number[]; decode: number[]; join: number; chunk: number; region: number }[]) {
  const logits: Float32Array[][] = seqs.map(() => []);
  const cursor = seqs.map(() => 0);
  for (let round = 0; seqs.some((s, i) => cursor[i]! < s.prompt.length + s.decode.length); round++) {
    for (const kind of ['prefill', 'decode'] as const) {
      const batch: StepSequence[] = [];
      const who: number[] = [];
      seqs.forEach((s, i) => {
        const all = [...s.prompt, ...s.decode];
        if (round < s.join || cursor[i]! >= all.length || (cursor[i]! < s.prompt.length) !== (kind === 'prefill')) return;
        const n = kind === 'prefill' ? Math.min(s.chunk, s.prompt.length - cursor[i]!) : 1;
        batch.push({ seq: s.region, ids: all.slice(cursor[i], cursor[i]! + n), readout: { kind: 'logits' } });
        who.push(i);
        cursor[i]! += n;
      });
      if (batch.length === 0) continue;
      const out = await model.step(batch, kind);
      out.forEach((r, j) => logits[who[j]!]!.push(r.logits!));
    }
  }
  return logits;
}

/**
 * Both cache formats under the device's matvec strategy, then every other matvec strategy this
 * device runs (one of them submitting after every layer), then every other fuse choice under the
 * device's matvec, and the folded norm under another: a batched step picks its kernels by its
 * kind and the plan, never by its size (matmul/fused.ts), so exactness must hold under each.
 */
const profile = (await getGpu()).profile;
const base = resolvePlan(profile);
const otherMatvec = runnable(profile, 'matvec').filter((m) => m !== base.matvec);
const PLANS: Partial<KernelPlan>[] = [
  { kvCache: 'f32' },
  { kvCache: 'f16' },
  ...otherMatvec.map((matvec, i) => ({ matvec, kvCache: 'f32' as const, submitLayers: i === 0 ? 1 : 0 })),
  ...runnable(profile, 'fuse').filter((fuse) => fuse !== base.fuse).map((fuse) => ({ fuse, kvCache: 'f32' as const })),
  ...otherMatvec.slice(0, 1).map((matvec) => ({ matvec, fuse: 'norm+qkv' as const, kvCache: 'f32' as const })),
];

/**
 * Whether a one-sequence decode step runs forward()'s one-token kernels under `plan`, so that its
 * logits are forward()'s bit for bit: matvec=rows, q/k/v unfolded (fuse none or qkv: the folded
 * norm is one-token only under rows, and batched steps keep it apart) and tiled decode attention
 * (batched decode steps never split). Under the other plans they agree to f32 rounding.
 */
const sameKernelsAsForward = (p: KernelPlan) => p.matvec === 'rows' && p.fuse !== 'norm+qkv' && p.attention === 'tiled';

for (const plan of PLANS) {
  const kvCache = plan.kvCache!;
  describe(`batched steps, plan ${formatPlan(resolvePlan(profile, plan))} (tiny model, window 16)`, () => {
    let model: MistralModel;
    beforeAll(async () => {
      model = await MistralModel.load(await getGpu(), GOLDEN, { sequences: 5, plan });
    });
    afterAll(() => model?.destroy());

    it('a sequence gets the same logits bit for bit alone and among 4 others (joins, chunked prefills, decode past the window)', async () => {
      const target = { prompt: randomIds(45), decode: randomIds(30), join: 0, chunk: STEP_PREFILL_TOKENS, region: 0 };
      for (const r of [0, 1, 2, 3, 4]) model.rewindSequence(r, 0);
      const [alone] = await play(model, [target]);
      for (const r of [0, 1, 2, 3, 4]) model.rewindSequence(r, 0);
      const others = [
        { prompt: randomIds(70), decode: randomIds(10), join: 0, chunk: 7, region: 1 },
        { prompt: randomIds(3), decode: randomIds(40), join: 2, chunk: 3, region: 4 },
        { prompt: randomIds(33), decode: randomIds(5), join: 5, chunk: 11, region: 2 },
        { prompt: randomIds(1), decode: randomIds(20), join: 9, chunk: 1, region: 0 },
      ];
      // The same sequence in region 3 instead of 0, prefilled in chunks of 5 instead of STEP_PREFILL_TOKENS.
      const [loaded] = await play(model, [{ ...target, region: 3, chunk: 5 }, ...others]);
      const lastOfPrompt = (l: Float32Array[], chunk: number) => l.slice(Math.ceil(45 / chunk) - 1);
      const a = lastOfPrompt(alone!, STEP_PREFILL_TOKENS);
      const b = lastOfPrompt(loaded!, 5);
      expect(b.length, `seed ${seed}`).toBe(a.length);
      a.forEach((row, i) => expect(Array.from(b[i]!), `step ${i} after the prompt, seed ${seed}`).toEqual(Array.from(row)));
    });

    it('agrees with the single-sequence forward pass (chunked prefill, decode through the rolling cache)', async () => {
      const prompt = randomIds(40);
      const decode = randomIds(25);
      for (const r of [0, 1, 2, 3, 4]) model.rewindSequence(r, 0);
      const [batched] = await play(model, [
        { prompt, decode, join: 0, chunk: 13, region: 2 },
        { prompt: randomIds(9), decode: randomIds(30), join: 1, chunk: 4, region: 3 },
      ]);
      model.reset();
      const single = [(await model.forward(prompt, { kind: 'logits' })).logits!];
      for (const id of decode) single.push((await model.forward([id], { kind: 'logits' })).logits!);
      const mine = batched!.slice(Math.ceil(40 / 13) - 1);
      expect(mine.length).toBe(single.length);
      // f32: the two paths add in different orders (1e-5 of the logit range, as golden.test.ts);
      // f16: the batched path reads the chunk's own keys back rounded, the single path exact.
      const tol = kvCache === 'f32' ? 1e-5 : 1e-2;
      single.forEach((row, i) => expect(maxRelError(mine[i]!, row), `position ${39 + i}, seed ${seed}`).toBeLessThan(tol));
    });

    it('a one-sequence decode step gives forward()\'s greedy tokens (and, where the kernels are the same, its logits bit for bit)', async () => {
      // The prompt through forward() in region 0, copied to region 3: both paths decode from the same keys.
      const prompt = randomIds(21);
      for (const r of [0, 1, 2, 3, 4]) model.rewindSequence(r, 0);
      const first = (await model.forward(prompt, { kind: 'logits' })).logits!;
      model.copySequence(0, 3);
      const resolved = resolvePlan(profile, plan);
      const exact = sameKernelsAsForward(resolved);
      const argmaxOf = (l: Float32Array) => l.reduce((best, x, i) => (x > l[best]! ? i : best), 0);
      let viaForward = argmaxOf(first);
      let viaStep = viaForward;
      // 30 tokens: past the window of 16 and the rolling cache's wrap.
      for (let i = 0; i < 30; i++) {
        const f = (await model.forward([viaForward], { kind: 'logits' })).logits!;
        const [st] = await model.step([{ seq: 3, ids: [viaStep], readout: { kind: 'logits' } }], 'decode');
        const g = st!.logits!;
        const where = `token ${i}, plan ${formatPlan(resolved)}, seed ${seed}`;
        if (exact) expect(Array.from(g), where).toEqual(Array.from(f));
        else expect(maxRelError(g, f), where).toBeLessThan(kvCache === 'f32' ? 1e-5 : 1e-2);
        viaForward = argmaxOf(f);
        viaStep = argmaxOf(g);
        expect(viaStep, where).toBe(viaForward);
      }
      expect(model.sequenceLength(3)).toBe(model.position);
    });

    it('reads back argmax, top-k with log-sum-exp and logits per sequence in one step', async () => {
      for (const r of [0, 1, 2]) model.rewindSequence(r, 0);
      const ids = [randomIds(6), randomIds(9), randomIds(2)];
      const [full] = await model.step([{ seq: 0, ids: ids[0]!, readout: { kind: 'logits' } }], 'prefill');
      for (const r of [0]) model.rewindSequence(r, 0);
      const out = await model.step([
        { seq: 1, ids: ids[1]!, readout: { kind: 'none' } },
        { seq: 0, ids: ids[0]!, readout: { kind: 'topk', k: 5, logSumExp: true } },
        { seq: 2, ids: ids[2]!, readout: { kind: 'argmax' } },
      ], 'prefill');
      expect(out[0]).toEqual({});
      const row = full!.logits!;
      const order = Array.from(row.keys()).sort((x, y) => row[y]! - row[x]! || x - y);
      expect(Array.from(out[1]!.topk!.ids)).toEqual(order.slice(0, 5));
      expect(Array.from(out[1]!.topk!.logits)).toEqual(order.slice(0, 5).map((i) => row[i]!));
      const lse = Math.log(row.reduce((sum, x) => sum + Math.exp(x - row[order[0]!]!), 0)) + row[order[0]!]!;
      expect(Math.abs(out[1]!.topk!.logSumExp! - lse)).toBeLessThan(1e-4);
      expect(typeof out[2]!.argmax).toBe('number');
      expect(model.sequenceLength(1)).toBe(9);
    });

    it('copies a region: a copied prompt continues exactly as the original', async () => {
      for (const r of [0, 1, 2, 3, 4]) model.rewindSequence(r, 0);
      const prompt = randomIds(20);
      const next = randomIds(3);
      await model.step([{ seq: 1, ids: prompt, readout: { kind: 'none' } }], 'prefill');
      model.copySequence(1, 4);
      expect(model.sequenceLength(4)).toBe(20);
      const out = await model.step([
        { seq: 1, ids: next, readout: { kind: 'logits' } },
        { seq: 4, ids: next, readout: { kind: 'logits' } },
      ], 'prefill');
      expect(Array.from(out[1]!.logits!)).toEqual(Array.from(out[0]!.logits!));
    });

    it('refuses a sequence twice in a step, too many tokens per sequence, and a region out of range', async () => {
      await expect(model.step([{ seq: 0, ids: [1], readout: { kind: 'none' } }, { seq: 0, ids: [2], readout: { kind: 'none' } }], 'decode')).rejects.toThrow(/twice/);
      await expect(model.step([{ seq: 0, ids: randomIds(STEP_PREFILL_TOKENS + 1), readout: { kind: 'none' } }], 'prefill')).rejects.toThrow(new RegExp(`1 to ${STEP_PREFILL_TOKENS} tokens`));
      await expect(model.step([{ seq: 0, ids: [1, 2], readout: { kind: 'none' } }], 'decode')).rejects.toThrow(/1 to 1 tokens per decode step/);
      await expect(model.step([{ seq: 5, ids: [1], readout: { kind: 'none' } }], 'decode')).rejects.toThrow(/sequence 5/);
    });
  });
}
