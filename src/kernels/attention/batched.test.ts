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
import { attention, createAttentionPartials, decodeAttentionRows, destroyAttentionPartials } from './index.ts';
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
 * Against a reference that reads past keys and values as the cache holds them and the step's
 * own as the cache will (kvRound), f32 rounding only: the kernels' summation orders against the
 * reference's, up to 1.7e-5 of the largest output measured (spread scores, 75-key rows).
 */
const TOL = 3e-5;

/** How a step's sequences attend: the plan's strategies (one `attention()` per sequence's chunk). */
const STRATEGIES = [
  { name: 'tiled', strategy: 'tiled', prefill: 'tiled' },
  { name: 'flash prefill', strategy: 'tiled', prefill: 'flash' },
  { name: 'split decode (5-key segments)', strategy: 'split', prefill: 'tiled', segmentKeys: 5 },
] as const;

/**
 * Plays steps over a pool of regions, as a model step runs them: each step is a list of
 * (sequence, rows) laid out one after another in the step's rows; each sequence's chunk runs
 * `attention()` at its row0 against its region (strategy `s`), then kvWriteRows stores every
 * row's keys. After each step the pool must equal the reference write, and each row's output
 * the reference attention over its own sequence's history.
 */
async function play(c: Shape, steps: Array<Array<[seq: number, rows: number]>>, dtype: KvCacheDtype, s: (typeof STRATEGIES)[number], qScale = 1, kvScale = 1) {
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
  const maxRows = Math.max(...steps.map((st) => st.reduce((n, [, r]) => n + r, 0)));
  const rowsBuffer = createStorageBuffer(gpu, maxRows * BATCH_ROW_BYTES);
  const partials = createAttentionPartials(gpu, c.heads, c.headDim);

  for (const [i, step] of steps.entries()) {
    const rows: BatchRow[] = [];
    const chunks = step.map(([seq, n]) => {
      const chunk = { seq, row0: rows.length, tokens: n, pos0: kHist[seq]!.length / kvRow };
      for (let r = 0; r < n; r++) rows.push({ seq, pos: chunk.pos0 + r });
      return chunk;
    });
    const T = rows.length;
    const q = randomNormal(rng, T * qRow, qScale);
    const k = randomNormal(rng, T * kvRow, kvScale);
    const v = randomNormal(rng, T * kvRow, kvScale);
    writeBatchRows(gpu, rowsBuffer, rows, { sequences: c.sequences, slots: c.slots, window: c.window });
    const qb = uploadF32(gpu, q);
    const kb = uploadF32(gpu, k);
    const vb = uploadF32(gpu, v);
    const out = createStorageBuffer(gpu, T * qRow * 4);
    poison(gpu, out);
    const enc = new Encoder(gpu);
    const shape = { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, window: c.window };
    for (const chunk of chunks) {
      attention(enc, {
        ...shape, ...chunk, q: qb, kNew: kb, vNew: vb, kCache, vCache, out, kvCache: dtype,
        strategy: s.strategy, prefill: s.prefill, partials, segmentKeys: 'segmentKeys' in s ? s.segmentKeys : undefined,
      });
    }
    kvWriteRows(enc, { kNew: kb, vNew: vb, kCache, vCache, batchRows: rowsBuffer, tokens: T, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, dtype });
    enc.submit();

    const got = await readF32(gpu, out, T * qRow);
    const where = `${s.name}, ${dtype}, seed ${seed}, step ${i} (${JSON.stringify(step)}) of ${JSON.stringify(c)}`;
    for (const chunk of chunks) {
      // The chunk's own keys as the cache will hold them (attention reads them before the write), the past as cached.
      const own = (x: Float32Array) => Array.from(x.subarray(chunk.row0 * kvRow, (chunk.row0 + chunk.tokens) * kvRow), (e) => roundLikeKvCache(e, dtype));
      const keys = new Float32Array([...kHist[chunk.seq]!, ...own(k)]);
      const values = new Float32Array([...vHist[chunk.seq]!, ...own(v)]);
      const qs = q.subarray(chunk.row0 * qRow, (chunk.row0 + chunk.tokens) * qRow);
      const expected = attentionRef(qs, keys, values, { tokens: chunk.tokens, pos0: chunk.pos0, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, window: c.window });
      const mine = got.subarray(chunk.row0 * qRow, (chunk.row0 + chunk.tokens) * qRow);
      expect(maxRelError(mine, expected), `sequence ${chunk.seq}, rows ${chunk.row0}.., positions ${chunk.pos0}..: ${where}`).toBeLessThan(TOL);
    }
    kvWriteRowsRef(kPool, k, rows, kvRow, c.slots, dtype);
    kvWriteRowsRef(vPool, v, rows, kvRow, c.slots, dtype);
    rows.forEach(({ seq }, t) => {
      for (let x = 0; x < kvRow; x++) {
        kHist[seq]!.push(roundLikeKvCache(k[t * kvRow + x]!, dtype));
        vHist[seq]!.push(roundLikeKvCache(v[t * kvRow + x]!, dtype));
      }
    });
    const kGot = decodeKvCache(await readBuffer(gpu, kCache, 0, bytes), dtype);
    expect(kGot, `pool after kvWriteRows: ${where}`).toEqual(kPool);
    for (const b of [qb, kb, vb, out]) b.destroy();
  }
  destroyAttentionPartials(partials);
  for (const b of [kCache, vCache, rowsBuffer]) b.destroy();
}

const tiny = { heads: 4, kvHeads: 2, headDim: 16, window: 16 };

for (const [dtype, s] of KV_CACHE_DTYPES.flatMap((d) => STRATEGIES.map((st) => [d, st] as const))) {
  describe(`a step's sequences through attention() at their rows and regions (${s.name}) + kvWriteRows, ${dtype} cache`, () => {
    it('3 sequences join at different times, prefill chunks beside decode rows, caches wrap (window 16, 19 slots)', () =>
      play({ ...tiny, slots: 19, sequences: 3 }, [
        [[0, 4]],
        [[0, 1], [1, 3]],
        [[1, 4], [0, 1], [2, 1]],
        [[2, 2], [0, 1], [1, 1]],
        ...Array.from({ length: 5 }, () => [[0, 4], [2, 3], [1, 1]] as Array<[number, number]>),
        [[1, 1], [0, 1], [2, 1]],
      ], dtype, s));

    it('awkward heads (6 on 1 KV head, head_dim 20), window 7 with exactly window + chunk - 1 slots', () =>
      play({ heads: 6, kvHeads: 1, headDim: 20, window: 7, slots: 9, sequences: 2 }, [
        [[1, 3], [0, 1]],
        ...Array.from({ length: 6 }, (_, i) => [[0, 3], [1, 1 + (i % 3)]] as Array<[number, number]>),
      ], dtype, s));

    it('no window: every earlier key, several 64-key tiles, widely spread scores', () =>
      play({ heads: 3, kvHeads: 3, headDim: 8, window: 0, slots: 150, sequences: 2 }, [
        [[1, 70], [0, 5]],
        [[0, 61], [1, 1]],
        [[0, 1], [1, 1]],
      ], dtype, s, 6));

    // Most keys and values below 2^-14, f16's smallest normal: a chunk's own keys must round to
    // the subnormals the store keeps (WGSL's quantizeToF16 may flush them to zero), else the
    // scores, scaled up by q, move with where a key arrived from.
    it('keys and values in f16\'s subnormal range, read from the step\'s own rows and from the cache alike', () =>
      play({ heads: 4, kvHeads: 2, headDim: 12, window: 0, slots: 40, sequences: 2 }, [
        [[0, 9], [1, 3]],
        [[1, 14], [0, 1]],
        [[0, 5], [1, 1]],
      ], dtype, s, 2e4, 4e-5));

    it('real head shape (32 heads / 8 KV heads, head_dim 128) at mixed positions, window 20 over 23 wrapped slots', () =>
      play({ heads: 32, kvHeads: 8, headDim: 128, window: 20, slots: 23, sequences: 3 }, [
        [[2, 4], [0, 4], [1, 1]],
        ...Array.from({ length: 9 }, () => [[0, 4], [1, 1], [2, 3]] as Array<[number, number]>),
      ], dtype, s));
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
    kvWriteRows(enc, { kNew: kb, vNew: vb, kCache, vCache, batchRows: rowsBuffer, tokens: rows.length, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, dtype });
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
    decodeAttentionRows(enc, { ...shape, q: qb, kNew: kb, vNew: vb, kCache, vCache, batchRows: rowsBuffer, out, tokens: T });
    kvWriteRows(enc, { kNew: kb, vNew: vb, kCache, vCache, batchRows: rowsBuffer, tokens: T, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, dtype });
    enc.submit();
    const got = await readF32(gpu, out, T * qRow);
    const where = `${dtype}, seed ${seed}, step ${step} (sequences ${seqs.join(',')}) of ${JSON.stringify(c)}`;
    for (const [t, { seq, pos }] of rows.entries()) {
      const mine = got.subarray(t * qRow, (t + 1) * qRow);
      expect(Array.from(mine), `row ${t} (sequence ${seq}, position ${pos}) against attention() alone: ${where}`).toEqual(Array.from(await readF32(gpu, alone[t]!.out, qRow)));
      // The row's own key and value as the cache will hold them (attention reads them from kNew / vNew, rounded alike).
      const own = (x: Float32Array) => Array.from(x.subarray(t * kvRow, (t + 1) * kvRow), (e) => roundLikeKvCache(e, dtype));
      const kSeen = new Float32Array([...kHist[seq]!, ...own(k)]);
      const vSeen = new Float32Array([...vHist[seq]!, ...own(v)]);
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
