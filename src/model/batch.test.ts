/**
 * Steps (the one pass: continuous batching, and forward() as a step of one sequence) on the tiny
 * golden model: a sequence's logits are the same bit for bit alone and beside 0, 7 or 31 other
 * sequences (joining, prefilling in chunks, decoding: decode steps of 1 to 32 rows), under every
 * plan, the GPU strategies (split decode attention, flash prefill) included.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { observeDispatches } from '../gpu/encoder.ts';
import { MistralModel, type StepSequence } from './model.ts';
import { formatPlan, resolvePlan, runnable, type KernelPlan } from '../kernels/plan.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed } from '../util/testing.ts';

const GOLDEN = new URL('../../golden/tiny-mistral/', import.meta.url).pathname;
const seed = freshSeed();
const rng = new Rng(seed);
const randomIds = (n: number) => Array.from({ length: n }, () => 1 + Math.floor(rng.next() * 31999));

/**
 * Runs each sequence's tokens through steps, as the scheduler does: from round `join` on, its
 * prompt in chunks of `chunk` (or fewer) in a prefill step, then one token per decode step;
 * each round runs a prefill step for those prefilling (maxChunk rows at most), then a decode
 * step for the others. Returns the logits of every step's last row, per sequence.
 */
async function play(model: MistralModel, seqs: { prompt: number[]; decode: number[]; join: number; chunk: number; region: number; argmax?: boolean }[]) {
  const logits: Float32Array[][] = seqs.map(() => []);
  const cursor = seqs.map(() => 0);
  for (let round = 0; seqs.some((s, i) => cursor[i]! < s.prompt.length + s.decode.length); round++) {
    for (const kind of ['prefill', 'decode'] as const) {
      const batch: StepSequence[] = [];
      const who: number[] = [];
      // A step holds maxChunk rows: sequences past that wait for the next round, as the scheduler's budget makes them.
      let budget = model.maxChunk;
      seqs.forEach((s, i) => {
        const all = [...s.prompt, ...s.decode];
        if (round < s.join || cursor[i]! >= all.length || (cursor[i]! < s.prompt.length) !== (kind === 'prefill') || budget === 0) return;
        const n = kind === 'prefill' ? Math.min(s.chunk, s.prompt.length - cursor[i]!, budget) : 1;
        budget -= n;
        batch.push({ seq: s.region, ids: all.slice(cursor[i], cursor[i]! + n), readout: { kind: s.argmax ? 'argmax' : 'logits' } });
        who.push(i);
        cursor[i]! += n;
      });
      if (batch.length === 0) continue;
      const out = await model.step(batch, kind);
      out.forEach((r, j) => logits[who[j]!]!.push(r.logits ?? new Float32Array()));
    }
  }
  return logits;
}

/**
 * Both cache formats under the device's matvec strategy, then every other matvec strategy this
 * device runs (one of them submitting after every layer), then every other fuse choice under the
 * device's matvec, and the folded norm under another; split decode attention (5-key segments, so
 * the tiny window splits) and flash prefill attention; and the GPU plan whole (split, flash,
 * the lanes matvec, the tiled gemm, the folded norm): a step picks its kernels by its kind and
 * the plan, never by its size, so exactness must hold under each.
 */
const profile = (await getGpu()).profile;
const base = resolvePlan(profile);
const otherMatvec = runnable(profile, 'matvec').filter((m) => m !== base.matvec);
type Case = { plan: Partial<KernelPlan>; attentionSegmentKeys?: number };
const PLANS: Case[] = [
  { plan: { kvCache: 'f32' } },
  { plan: { kvCache: 'f16' } },
  ...otherMatvec.map((matvec, i) => ({ plan: { matvec, kvCache: 'f32' as const, submitLayers: i === 0 ? 1 : 0 } })),
  ...runnable(profile, 'fuse').filter((fuse) => fuse !== base.fuse).map((fuse) => ({ plan: { fuse, kvCache: 'f32' as const } })),
  ...otherMatvec.slice(0, 1).map((matvec) => ({ plan: { matvec, fuse: 'norm+qkv' as const, kvCache: 'f32' as const } })),
  { plan: { attention: 'split', kvCache: 'f32' }, attentionSegmentKeys: 5 },
  { plan: { attention: 'split', kvCache: 'f16' }, attentionSegmentKeys: 5 },
  ...runnable(profile, 'prefillAttention').filter((a) => a !== base.prefillAttention).map((prefillAttention) => ({ plan: { prefillAttention, kvCache: 'f32' as const } })),
  {
    plan: {
      matvec: runnable(profile, 'matvec').includes('subgroup') ? 'subgroup' : 'workgroup', gemm: 'tiled', fuse: 'norm+qkv',
      attention: 'split', prefillAttention: 'flash', kvCache: 'f32', submitLayers: 1,
    },
    attentionSegmentKeys: 5,
  },
];

/** `n` other sequences of random shapes joining at random rounds, in regions 1.. (region 0 is left to the target). */
function randomOthers(n: number) {
  return Array.from({ length: n }, (_, i) => ({
    prompt: randomIds(1 + Math.floor(rng.next() * 30)),
    decode: randomIds(4 + Math.floor(rng.next() * 16)),
    join: Math.floor(rng.next() * 6),
    chunk: 1 + Math.floor(rng.next() * 20),
    region: i + 1,
    argmax: true,
  }));
}

for (const { plan, attentionSegmentKeys } of PLANS) {
  describe(`steps, plan ${formatPlan(resolvePlan(profile, plan))} (tiny model, window 16)`, () => {
    let model: MistralModel;
    const REGIONS = 33;
    const rewindAll = () => {
      for (let r = 0; r < REGIONS; r++) model.rewindSequence(r, 0);
    };
    beforeAll(async () => {
      model = await MistralModel.load(await getGpu(), GOLDEN, { sequences: REGIONS, plan, attentionSegmentKeys });
    });
    afterAll(() => model?.destroy());

    it('a sequence gets the same logits bit for bit alone and among 4, 7 and 31 others (joins, chunked prefills, decode steps of up to 32 rows)', async () => {
      // 30 prompt tokens and 20 decoded: past the window of 16 and the rolling cache's wrap.
      const target = { prompt: randomIds(30), decode: randomIds(20), join: 0, chunk: model.maxChunk, region: 0 };
      rewindAll();
      const [alone] = await play(model, [target]);
      const a = alone!.slice(Math.ceil(30 / model.maxChunk) - 1);
      const crowds = [
        [
          { prompt: randomIds(70), decode: randomIds(10), join: 0, chunk: 7, region: 1, argmax: true },
          { prompt: randomIds(3), decode: randomIds(40), join: 2, chunk: 3, region: 4, argmax: true },
          { prompt: randomIds(33), decode: randomIds(5), join: 5, chunk: 11, region: 2, argmax: true },
          { prompt: randomIds(1), decode: randomIds(20), join: 9, chunk: 1, region: 0, argmax: true },
        ],
        randomOthers(7),
        randomOthers(31),
      ];
      // The others read back their argmax only (the scheduler's greedy readout): a crowd's 32 rows of
      // 32002 logits per step would cost more than the step; the target's row is what is compared.
      for (const others of crowds) {
        rewindAll();
        // The same sequence in the last region instead of 0, prefilled in chunks of 5 instead of maxChunk.
        const [loaded] = await play(model, [{ ...target, region: REGIONS - 1, chunk: 5 }, ...others]);
        const b = loaded!.slice(Math.ceil(30 / 5) - 1);
        expect(b.length, `seed ${seed}`).toBe(a.length);
        a.forEach((row, i) => expect(Array.from(b[i]!), `step ${i} after the prompt, among ${others.length} others, seed ${seed}`).toEqual(Array.from(row)));
      }
    });

    it("runs the plan's attention kernels: the prefill strategy in a prefill step, split-K for a decode step's rows under attention=split", async () => {
      rewindAll();
      const gpu = await getGpu();
      const labels: string[] = [];
      const record = async (batch: StepSequence[], kind: 'prefill' | 'decode') => {
        observeDispatches(gpu, { pass: (label) => (labels.push(label), { label }), encoded: () => {} });
        try {
          await model.step(batch, kind);
        } finally {
          observeDispatches(gpu, null);
        }
        return labels.splice(0);
      };
      const prefill = await record([{ seq: 0, ids: randomIds(20), readout: { kind: 'none' } }, { seq: 1, ids: randomIds(1), readout: { kind: 'argmax' } }], 'prefill');
      const decode = await record([{ seq: 0, ids: randomIds(1), readout: { kind: 'argmax' } }, { seq: 1, ids: randomIds(1), readout: { kind: 'argmax' } }], 'decode');
      const { prefillAttention, attention, kvCache } = model.plan;
      const kernels = (ls: string[]) => [...new Set(ls.filter((l) => l.startsWith('attention_')))].sort();
      expect(kernels(prefill), 'prefill step').toEqual([`attention_${prefillAttention}_${kvCache}`]);
      // attentionSegmentKeys makes every decode row split; without it the tiny window never does.
      const splits = attention === 'split' && attentionSegmentKeys !== undefined;
      expect(kernels(decode), 'decode step').toEqual(splits ? [`attention_split_${kvCache}`, `attention_split_reduce_${kvCache}`] : [`attention_tiled_rows_${kvCache}`]);
    });

    it('forward() is a step of one sequence: its logits bit for bit, prefill and decode through the rolling cache', async () => {
      const prompt = randomIds(40);
      const decode = randomIds(18);
      rewindAll();
      const [stepped] = await play(model, [{ prompt, decode, join: 0, chunk: model.maxChunk, region: 2 }]);
      model.reset();
      const single = [(await model.forward(prompt, { kind: 'logits' })).logits!];
      for (const id of decode) single.push((await model.forward([id], { kind: 'logits' })).logits!);
      expect(stepped!.length).toBe(single.length);
      single.forEach((row, i) => expect(Array.from(stepped![i]!), `position ${39 + i}, seed ${seed}`).toEqual(Array.from(row)));
      expect(model.sequenceLength(2)).toBe(model.position);
    });

    it('reads back argmax, top-k with log-sum-exp and logits per sequence in one step', async () => {
      rewindAll();
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
      rewindAll();
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
      await expect(model.step([{ seq: 0, ids: randomIds(model.maxChunk + 1), readout: { kind: 'none' } }], 'prefill')).rejects.toThrow(new RegExp(`1 to ${model.maxChunk} tokens`));
      await expect(model.step([{ seq: 0, ids: [1, 2], readout: { kind: 'none' } }], 'decode')).rejects.toThrow(/1 to 1 tokens per decode step/);
      await expect(model.step([{ seq: REGIONS, ids: [1], readout: { kind: 'none' } }], 'decode')).rejects.toThrow(new RegExp(`sequence ${REGIONS}`));
      await expect(model.step([{ seq: 0, ids: [1, 2], readout: { kind: 'all-logits' } }, { seq: 1, ids: [3], readout: { kind: 'none' } }], 'prefill')).rejects.toThrow(/one sequence/);
    });
  });
}
