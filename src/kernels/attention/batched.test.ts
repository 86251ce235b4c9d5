import { describe, expect, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { createStorageBuffer, readBuffer, readF32, uploadF32 } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import { decodeKvCache, KV_CACHE_DTYPES, kvBytesPerElement, roundLikeKvCache, type KvCacheDtype } from '../kv_cache.ts';
import { poisonKvCache } from '../kv_cache.testing.ts';
import { kvWriteRows } from '../kv_write.ts';
import { kvWriteRowsRef } from '../kv_write.ref.ts';
import { BATCH_ROW_BYTES, writeBatchRows, type BatchRow } from '../batch_rows.ts';
import { attention, batchedAttention, decodeAttentionRows } from './index.ts';
import { attentionRef } from './attention.ref.ts';

interface Shape {
  heads: number;
  kvHeads: number;
  headDim: number;
  window: number;
  /** Cache rows per sequence. */
  slots: number;
  sequences: number;
}

/**
 * Against a reference that reads keys and values as the cache holds them (every key, the row's
 * own included, comes from the pool), f32 rounding only.
 */
const TOL = 1e-5;

/**
 * Plays steps of a batched decode: each step is a list of (sequence, rows) and runs
 * kvWriteRows then batchedAttention, as a batched model step does. After each step the pool
 * must equal the reference write, and each row's output the reference attention over its own
 * sequence's history (as the cache rounds it).
 */
async function play(c: Shape, steps: Array<Array<[seq: number, rows: number]>>, dtype: KvCacheDtype, qScale = 1) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const kvRow = c.kvHeads * c.headDim;
  const qRow = c.heads * c.headDim;
  const poolRows = c.sequences * c.slots;
  const bytes = poolRows * kvRow * kvBytesPerElement(dtype);
  const kCache = createStorageBuffer(gpu, bytes);
  const vCache = createStorageBuffer(gpu, bytes);
  poisonKvCache(gpu, kCache, dtype);
  poisonKvCache(gpu, vCache, dtype);
  const kPool = new Float32Array(poolRows * kvRow).fill(NaN);
  const vPool = new Float32Array(poolRows * kvRow).fill(NaN);
  // Each sequence's history by absolute position, as its cache holds it.
  const kHist: number[][] = Array.from({ length: c.sequences }, () => []);
  const vHist: number[][] = Array.from({ length: c.sequences }, () => []);
  const maxRows = Math.max(...steps.map((s) => s.reduce((n, [, r]) => n + r, 0)));
  const rowsBuffer = createStorageBuffer(gpu, maxRows * BATCH_ROW_BYTES);

  for (const [i, step] of steps.entries()) {
    const rows: BatchRow[] = [];
    for (const [seq, n] of step) for (let r = 0; r < n; r++) rows.push({ seq, pos: kHist[seq]!.length / kvRow + r });
    const T = rows.length;
    const q = randomNormal(rng, T * qRow, qScale);
    const k = randomNormal(rng, T * kvRow);
    const v = randomNormal(rng, T * kvRow);
    writeBatchRows(gpu, rowsBuffer, rows, { sequences: c.sequences, slots: c.slots, window: c.window });
    const qb = uploadF32(gpu, q);
    const kb = uploadF32(gpu, k);
    const vb = uploadF32(gpu, v);
    const out = createStorageBuffer(gpu, T * qRow * 4);
    poison(gpu, out);
    const enc = new Encoder(gpu);
    const shape = { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots };
    kvWriteRows(enc, { kNew: kb, vNew: vb, kCache, vCache, rows: rowsBuffer, tokens: T, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, dtype });
    batchedAttention(enc, { ...shape, q: qb, kCache, vCache, rows: rowsBuffer, out, tokens: T, window: c.window, kvCache: dtype });
    enc.submit();

    kvWriteRowsRef(kPool, k, rows, kvRow, c.slots, dtype);
    kvWriteRowsRef(vPool, v, rows, kvRow, c.slots, dtype);
    rows.forEach(({ seq }, t) => {
      for (let x = 0; x < kvRow; x++) {
        kHist[seq]!.push(roundLikeKvCache(k[t * kvRow + x]!, dtype));
        vHist[seq]!.push(roundLikeKvCache(v[t * kvRow + x]!, dtype));
      }
    });
    const where = `${dtype}, seed ${seed}, step ${i} (${JSON.stringify(step)}) of ${JSON.stringify(c)}`;
    const kGot = decodeKvCache(await readBuffer(gpu, kCache, 0, bytes), dtype);
    expect(kGot, `pool after kvWriteRows: ${where}`).toEqual(kPool);
    const got = await readF32(gpu, out, T * qRow);
    rows.forEach(({ seq, pos }, t) => {
      const expected = attentionRef(q.subarray(t * qRow, (t + 1) * qRow), new Float32Array(kHist[seq]!), new Float32Array(vHist[seq]!), {
        tokens: 1, pos0: pos, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, window: c.window,
      });
      expect(maxRelError(got.subarray(t * qRow, (t + 1) * qRow), expected), `row ${t} (sequence ${seq}, position ${pos}): ${where}`).toBeLessThan(TOL);
    });
    for (const b of [qb, kb, vb, out]) b.destroy();
  }
  for (const b of [kCache, vCache, rowsBuffer]) b.destroy();
}

const tiny = { heads: 4, kvHeads: 2, headDim: 16, window: 16 };

for (const dtype of KV_CACHE_DTYPES) {
  describe(`batched attention + kvWriteRows, ${dtype} cache`, () => {
    it('3 sequences join at different times, prefill chunks beside decode rows, caches wrap (window 16, 19 slots)', () =>
      play({ ...tiny, slots: 19, sequences: 3 }, [
        [[0, 4]],
        [[0, 1], [1, 3]],
        [[1, 4], [0, 1], [2, 1]],
        [[2, 2], [0, 1], [1, 1]],
        ...Array.from({ length: 5 }, () => [[0, 4], [2, 3], [1, 1]] as Array<[number, number]>),
        [[1, 1], [0, 1], [2, 1]],
      ], dtype));

    it('awkward heads (6 on 1 KV head, head_dim 20), window 7 with exactly window + chunk - 1 slots', () =>
      play({ heads: 6, kvHeads: 1, headDim: 20, window: 7, slots: 9, sequences: 2 }, [
        [[1, 3], [0, 1]],
        ...Array.from({ length: 6 }, (_, i) => [[0, 3], [1, 1 + (i % 3)]] as Array<[number, number]>),
      ], dtype));

    it('no window: every earlier key, several 64-key tiles, widely spread scores', () =>
      play({ heads: 3, kvHeads: 3, headDim: 8, window: 0, slots: 150, sequences: 2 }, [
        [[1, 70], [0, 5]],
        [[0, 61], [1, 1]],
        [[0, 1], [1, 1]],
      ], dtype, 6));

    it('real head shape (32 heads / 8 KV heads, head_dim 128) at mixed positions, window 20 over 23 wrapped slots', () =>
      play({ heads: 32, kvHeads: 8, headDim: 128, window: 20, slots: 23, sequences: 3 }, [
        [[2, 4], [0, 4], [1, 1]],
        ...Array.from({ length: 9 }, () => [[0, 4], [1, 1], [2, 3]] as Array<[number, number]>),
      ], dtype));
  });
}

/**
 * A batched decode step through decodeAttentionRows (tiled.wgsl's `decode_rows`): sequences of
 * different histories share the pool; each step takes a random subset of them, in a random
 * order, one row each. Every row's output must be bit for bit `attention` (tiled) decoding that
 * sequence alone (its region bound as the whole cache), which is what makes a one-sequence
 * decode step equal forward(); and within TOL of the reference over the history as the cache
 * holds it (the row's own key exact, from kNew). Regions must be 256-byte aligned to be bound
 * alone: the shapes below are.
 */
async function decodeRowsAsAlone(c: Shape, histories: number[], steps: number, dtype: KvCacheDtype, qScale = 1) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const kvRow = c.kvHeads * c.headDim;
  const qRow = c.heads * c.headDim;
  const regionBytes = c.slots * kvRow * kvBytesPerElement(dtype);
  const kCache = createStorageBuffer(gpu, c.sequences * regionBytes);
  const vCache = createStorageBuffer(gpu, c.sequences * regionBytes);
  poisonKvCache(gpu, kCache, dtype);
  poisonKvCache(gpu, vCache, dtype);
  const rowsBuffer = createStorageBuffer(gpu, Math.max(c.sequences, 64) * BATCH_ROW_BYTES);
  const kHist: number[][] = Array.from({ length: c.sequences }, () => []);
  const vHist: number[][] = Array.from({ length: c.sequences }, () => []);
  const shape = { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, window: c.window, kvCache: dtype };
  const pool = { sequences: c.sequences, slots: c.slots, window: c.window };
  /** Writes `k`, `v` (rows) at the sequences' next positions; returns the rows. */
  const append = (enc: Encoder, seqs: number[], k: Float32Array, v: Float32Array, kb: GPUBuffer, vb: GPUBuffer) => {
    const rows: BatchRow[] = seqs.map((seq, t) => ({ seq, pos: kHist[seq]!.length / kvRow + seqs.slice(0, t).filter((s) => s === seq).length }));
    writeBatchRows(gpu, rowsBuffer, rows, pool);
    kvWriteRows(enc, { kNew: kb, vNew: vb, kCache, vCache, rows: rowsBuffer, tokens: rows.length, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, dtype });
    return rows;
  };
  const record = (seqs: number[], k: Float32Array, v: Float32Array) =>
    seqs.forEach((seq, t) => {
      for (let x = 0; x < kvRow; x++) {
        kHist[seq]!.push(roundLikeKvCache(k[t * kvRow + x]!, dtype));
        vHist[seq]!.push(roundLikeKvCache(v[t * kvRow + x]!, dtype));
      }
    });
  // The histories, in chunks that fit a region beside the window.
  const chunk = c.window > 0 ? c.slots - c.window + 1 : 64;
  for (const [seq, n] of histories.entries()) {
    for (let done = 0; done < n; done += chunk) {
      const seqs = Array.from({ length: Math.min(chunk, n - done) }, () => seq);
      const k = randomNormal(rng, seqs.length * kvRow);
      const v = randomNormal(rng, seqs.length * kvRow);
      const kb = uploadF32(gpu, k);
      const vb = uploadF32(gpu, v);
      const enc = new Encoder(gpu);
      append(enc, seqs, k, v, kb, vb);
      enc.submit();
      record(seqs, k, v);
      kb.destroy();
      vb.destroy();
    }
  }
  for (let step = 0; step < steps; step++) {
    const seqs = Array.from({ length: c.sequences }, (_, i) => i).filter(() => rng.next() < 0.7);
    if (seqs.length === 0) seqs.push(step % c.sequences);
    for (let i = seqs.length - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [seqs[i], seqs[j]] = [seqs[j]!, seqs[i]!];
    }
    const T = seqs.length;
    const q = randomNormal(rng, T * qRow, qScale);
    const k = randomNormal(rng, T * kvRow);
    const v = randomNormal(rng, T * kvRow);
    const [qb, kb, vb] = [q, k, v].map((a) => uploadF32(gpu, a)) as [GPUBuffer, GPUBuffer, GPUBuffer];
    const out = createStorageBuffer(gpu, T * qRow * 4);
    poison(gpu, out);
    const rows: BatchRow[] = seqs.map((seq) => ({ seq, pos: kHist[seq]!.length / kvRow }));
    writeBatchRows(gpu, rowsBuffer, rows, pool);
    // Each row alone first: the single-sequence decode on its own region, its own q/k/v row.
    const alone = rows.map(({ seq, pos }, t) => {
      const one = (a: Float32Array, n: number) => uploadF32(gpu, a.subarray(t * n, (t + 1) * n));
      const b = { q: one(q, qRow), kNew: one(k, kvRow), vNew: one(v, kvRow), out: createStorageBuffer(gpu, qRow * 4) };
      poison(gpu, b.out);
      const region = (buffer: GPUBuffer) => ({ buffer, offset: seq * regionBytes, size: regionBytes });
      const enc = new Encoder(gpu);
      attention(enc, { ...shape, ...b, kCache: region(kCache), vCache: region(vCache), tokens: 1, pos0: pos, strategy: 'tiled' });
      enc.submit();
      return b;
    });
    const enc = new Encoder(gpu);
    decodeAttentionRows(enc, { ...shape, q: qb, kNew: kb, vNew: vb, kCache, vCache, rows: rowsBuffer, out, tokens: T });
    kvWriteRows(enc, { kNew: kb, vNew: vb, kCache, vCache, rows: rowsBuffer, tokens: T, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, dtype });
    enc.submit();
    const got = await readF32(gpu, out, T * qRow);
    const where = `${dtype}, seed ${seed}, step ${step} (sequences ${seqs.join(',')}) of ${JSON.stringify(c)}`;
    for (const [t, { seq, pos }] of rows.entries()) {
      const mine = got.subarray(t * qRow, (t + 1) * qRow);
      expect(Array.from(mine), `row ${t} (sequence ${seq}, position ${pos}) against attention() alone: ${where}`).toEqual(Array.from(await readF32(gpu, alone[t]!.out, qRow)));
      const kSeen = new Float32Array([...kHist[seq]!, ...k.subarray(t * kvRow, (t + 1) * kvRow)]);
      const vSeen = new Float32Array([...vHist[seq]!, ...v.subarray(t * kvRow, (t + 1) * kvRow)]);
      const expected = attentionRef(q.subarray(t * qRow, (t + 1) * qRow), kSeen, vSeen, { tokens: 1, pos0: pos, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, window: c.window });
      expect(maxRelError(mine, expected), `row ${t} (sequence ${seq}, position ${pos}) against the reference: ${where}`).toBeLessThan(TOL);
    }
    record(seqs, k, v);
    for (const b of [qb, kb, vb, out, ...alone.flatMap((a) => [a.q, a.kNew, a.vNew, a.out])]) b.destroy();
  }
  for (const b of [kCache, vCache, rowsBuffer]) b.destroy();
}

for (const dtype of KV_CACHE_DTYPES) {
  describe(`batched decode attention (decodeAttentionRows), ${dtype} cache: each row as attention() decoding its sequence alone`, () => {
    it('4 sequences of different histories, random subsets in random order, caches wrap (window 16, 20 slots)', () =>
      decodeRowsAsAlone({ ...tiny, slots: 20, sequences: 4 }, [0, 3, 17, 33], 12, dtype));

    it('real head shape (32 heads / 8 KV heads, head_dim 128), no window, past one 256-key tile, spread scores', () =>
      decodeRowsAsAlone({ heads: 32, kvHeads: 8, headDim: 128, window: 0, slots: 300, sequences: 3 }, [250, 5, 270], 12, dtype, 4));
  });
}

describe('batch rows', () => {
  it('refuses rows that would overrun a region, jump positions or name no sequence', async () => {
    const gpu = await getGpu();
    const b = createStorageBuffer(gpu, 8 * BATCH_ROW_BYTES);
    const pool = { sequences: 2, slots: 10, window: 8 };
    expect(() => writeBatchRows(gpu, b, [0, 1, 2, 3].map((i) => ({ seq: 0, pos: 20 + i })), pool)).toThrow(/needs 11 cache slots/);
    expect(() => writeBatchRows(gpu, b, [{ seq: 0, pos: 3 }, { seq: 0, pos: 5 }], pool)).toThrow(/jumps/);
    expect(() => writeBatchRows(gpu, b, [{ seq: 2, pos: 0 }], pool)).toThrow(/not in \[0, 2\)/);
    expect(() => writeBatchRows(gpu, b, [{ seq: 0, pos: 20 }, { seq: 0, pos: 21 }, { seq: 1, pos: 9 }], pool)).not.toThrow();
    b.destroy();
  });
});
