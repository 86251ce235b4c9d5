import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, poison, readF32, uploadF32 } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxRelError, randomNormal } from '../util/testing.ts';
import { attention } from './attention.ts';
import { attentionRef } from './attention.ref.ts';
import { kvWrite } from './kv_write.ts';

interface Case {
  heads: number;
  kvHeads: number;
  headDim: number;
  window: number;
  slots: number;
  /** Lengths of the chunks fed in order (prefill chunks, then decode steps of 1). */
  chunks: number[];
  /** Chunks before this index are only written to the cache, not checked (saves time). */
  checkFrom?: number;
  /** Scale of q, to push scores far apart and exercise the softmax's running maximum. */
  qScale?: number;
}

/**
 * Plays a sequence through the rolling cache the way the model does (attention on the chunk,
 * then kvWrite of the chunk) and checks each chunk's output against the reference over
 * the full key/value history.
 */
async function play(c: Case) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const total = c.chunks.reduce((a, b) => a + b, 0);
  const kvRow = c.kvHeads * c.headDim;
  const qRow = c.heads * c.headDim;
  const k = randomNormal(rng, total * kvRow);
  const v = randomNormal(rng, total * kvRow);
  const q = randomNormal(rng, total * qRow, c.qScale ?? 1);

  const kCache = createStorageBuffer(gpu, c.slots * kvRow * 4);
  const vCache = createStorageBuffer(gpu, c.slots * kvRow * 4);
  // Slots never written must never be read: NaN there would show up in the output.
  poison(gpu, kCache);
  poison(gpu, vCache);

  let pos0 = 0;
  for (let i = 0; i < c.chunks.length; i++) {
    const tokens = c.chunks[i]!;
    const kNew = uploadF32(gpu, k.subarray(pos0 * kvRow, (pos0 + tokens) * kvRow));
    const vNew = uploadF32(gpu, v.subarray(pos0 * kvRow, (pos0 + tokens) * kvRow));
    const check = i >= (c.checkFrom ?? 0);
    const qb = uploadF32(gpu, q.subarray(pos0 * qRow, (pos0 + tokens) * qRow));
    const out = createStorageBuffer(gpu, tokens * qRow * 4);
    poison(gpu, out);
    const enc = new Encoder(gpu);
    const shape = { tokens, pos0, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, window: c.window };
    if (check) attention(enc, { ...shape, q: qb, kNew, vNew, kCache, vCache, out, slots: c.slots });
    kvWrite(enc, { kNew, vNew, kCache, vCache, tokens, pos0, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots });
    enc.submit();
    if (check) {
      const actual = await readF32(gpu, out, tokens * qRow);
      const expected = attentionRef(q.subarray(pos0 * qRow), k, v, shape);
      const err = maxRelError(actual, expected);
      expect(err, `seed ${seed}, chunk ${i} (pos0 ${pos0}, tokens ${tokens}) of ${JSON.stringify(c)}`).toBeLessThan(1e-5);
    }
    for (const b of [kNew, vNew, qb, out]) b.destroy();
    pos0 += tokens;
  }
  kCache.destroy();
  vCache.destroy();
}

const tiny = { heads: 4, kvHeads: 2, headDim: 16, window: 16 };
const real = { heads: 32, kvHeads: 8, headDim: 128, window: 4096, slots: 4096 };

describe('attention (tiny shape: 4 heads, 2 KV heads, head_dim 16, window 16)', () => {
  it('prefills a 40-token chunk at position 0, longer than the window', () => play({ ...tiny, slots: 16, chunks: [40] }));

  it('continues chunks at pos0 > 0 over a wrapped rolling cache', () =>
    play({ ...tiny, slots: 16, chunks: [23, 5, 17, 9, 31, 3] }));

  it('decodes far past the window (pos0 = 100 and on)', () =>
    play({ ...tiny, slots: 16, chunks: [37, 30, 33, 1, 1, 1], checkFrom: 3 }));

  it('handles a cache of exactly window - 1 slots', () => play({ ...tiny, slots: 15, chunks: [20, 7, 1, 1] }));

  it('without a window (window = 0) sees every earlier position', () =>
    play({ ...tiny, window: 0, slots: 90, chunks: [29, 1, 21, 1, 30, 1] }));

  it('stays stable with widely spread scores', () =>
    play({ ...tiny, window: 0, slots: 200, chunks: [70, 67, 1], qScale: 8 }));

  it('serves other head groupings: 6 query heads on 1 KV head, and plain multi-head (3 on 3)', async () => {
    await play({ heads: 6, kvHeads: 1, headDim: 20, window: 8, slots: 8, chunks: [13, 6, 1] });
    await play({ heads: 3, kvHeads: 3, headDim: 8, window: 0, slots: 80, chunks: [70, 1] });
  });

  // Tiles hold 256 keys (64 invocations x 4 keys each); these runs cross several tiles,
  // wrap the rolling cache inside a tile, and mix cached and chunk keys in one tile.
  it('walks several 256-key tiles with a wrapped cache (window 300, 299 slots)', () =>
    play({ heads: 4, kvHeads: 2, headDim: 16, window: 300, slots: 299, chunks: [290, 250, 1, 1, 130, 1], checkFrom: 1 }));

  it('walks several 256-key tiles without a window, with spread scores', () =>
    play({ ...tiny, window: 0, slots: 800, chunks: [600, 1, 77, 1, 3], checkFrom: 1, qScale: 6 }));

  it('refuses a cache too small for the past it must see', async () => {
    const gpu = await getGpu();
    const b = createStorageBuffer(gpu, 16 * 64 * 4);
    const enc = new Encoder(gpu);
    const a = { q: b, kNew: b, vNew: b, kCache: b, vCache: b, out: b, tokens: 1, heads: 4, kvHeads: 2, headDim: 16 };
    expect(() => attention(enc, { ...a, pos0: 40, slots: 14, window: 16 })).toThrow(/cannot hold/);
    expect(() => attention(enc, { ...a, pos0: 40, slots: 39, window: 0 })).toThrow(/cannot hold/);
    enc.submit();
    b.destroy();
  });
});

describe('attention (real shape: 32 heads, 8 KV heads, head_dim 128, window 4096)', () => {
  it('prefills 5 tokens, then a 7-token chunk at pos0 = 5', () => play({ ...real, chunks: [5, 7] }));
  it('decodes at pos0 = 300', () => play({ ...real, chunks: [300, 1, 1], checkFrom: 1 }));
  it('decodes at pos0 = 1000 (four 256-key tiles), then a 3-token chunk', () =>
    play({ ...real, chunks: [1000, 1, 3], checkFrom: 1 }));
  it('decodes past a small window over a wrapped cache (window 600, 599 slots)', () =>
    play({ ...real, window: 600, slots: 599, chunks: [700, 1, 1], checkFrom: 1 }));
});
