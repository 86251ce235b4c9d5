import { afterAll, describe, expect, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { createStorageBuffer, readBuffer, readF32, uploadF32 } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import { decodeKvCache, KV_CACHE_DTYPES, kvBytesPerElement, roundLikeKvCache, type KvCacheDtype } from '../kv_cache.ts';
import { poisonKvCache } from '../kv_cache.testing.ts';
import { kvWrite } from '../kv_write.ts';
import {
  ATTENTION_STRATEGIES, attention, createAttentionPartials, destroyAttentionPartials, FLASH_TILES, splitSegments, type AttentionStrategy, type PrefillAttentionStrategy,
} from './index.ts';
import { attentionRef } from './attention.ref.ts';

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
  /** Split strategy: keys per segment (default: the wrapper's choice for a large GPU). */
  segmentKeys?: number;
}

interface Variant {
  strategy: AttentionStrategy;
  kvCache: KvCacheDtype;
  /** Strategy for chunks of more than one token (default tiled). */
  prefill?: PrefillAttentionStrategy;
}

/**
 * Tolerances, relative to the largest |output| of the reference. Against a reference that
 * reads keys and values exactly as the kernels see them (the past as the cache holds it, the
 * chunk's own rounded alike: f32, or f16), both strategies and both formats agree to f32
 * rounding: up to 1.01e-5 measured (f16 inputs, the real head shape), so 2e-5. Against the
 * exact f32 keys and values, an f16 cache drifts by its rounding (2^-11 relative per value);
 * the drift measured is printed at the end.
 */
const TOL = 2e-5;
const F16_DRIFT_TOL = 1e-2;
const drift: Record<string, number> = {};

/**
 * Plays a sequence through the rolling cache the way the model does (attention on the chunk,
 * then kvWrite of the chunk) and checks each chunk's output against the reference over
 * the full key/value history.
 */
async function play(c: Case, v: Variant) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const total = c.chunks.reduce((a, b) => a + b, 0);
  const kvRow = c.kvHeads * c.headDim;
  const qRow = c.heads * c.headDim;
  const k = randomNormal(rng, total * kvRow);
  const vals = randomNormal(rng, total * kvRow);
  const q = randomNormal(rng, total * qRow, c.qScale ?? 1);

  const cacheBytes = c.slots * kvRow * kvBytesPerElement(v.kvCache);
  const kCache = createStorageBuffer(gpu, cacheBytes);
  const vCache = createStorageBuffer(gpu, cacheBytes);
  // Slots never written must never be read: NaN there would show up in the output.
  poisonKvCache(gpu, kCache, v.kvCache);
  poisonKvCache(gpu, vCache, v.kvCache);
  const partials = createAttentionPartials(gpu, c.heads, c.headDim);
  poison(gpu, partials.o);
  poison(gpu, partials.ml);
  const segmentKeys = v.strategy === 'split' ? c.segmentKeys : undefined;

  let pos0 = 0;
  for (let i = 0; i < c.chunks.length; i++) {
    const tokens = c.chunks[i]!;
    const kNew = uploadF32(gpu, k.subarray(pos0 * kvRow, (pos0 + tokens) * kvRow));
    const vNew = uploadF32(gpu, vals.subarray(pos0 * kvRow, (pos0 + tokens) * kvRow));
    const check = i >= (c.checkFrom ?? 0);
    const qb = uploadF32(gpu, q.subarray(pos0 * qRow, (pos0 + tokens) * qRow));
    const out = createStorageBuffer(gpu, tokens * qRow * 4);
    poison(gpu, out);
    // The past as the cache holds it: position j < pos0 in slot j % slots (f16-rounded in an
    // f16 cache); the chunk's own keys as the cache will hold them (read from kNew / vNew, rounded alike).
    const kSeen = k.slice(0, (pos0 + tokens) * kvRow);
    const vSeen = vals.slice(0, (pos0 + tokens) * kvRow);
    for (let e = pos0 * kvRow; e < (pos0 + tokens) * kvRow; e++) {
      kSeen[e] = roundLikeKvCache(kSeen[e]!, v.kvCache);
      vSeen[e] = roundLikeKvCache(vSeen[e]!, v.kvCache);
    }
    if (check && pos0 > 0) {
      const kc = decodeKvCache(await readBuffer(gpu, kCache, 0, cacheBytes), v.kvCache);
      const vc = decodeKvCache(await readBuffer(gpu, vCache, 0, cacheBytes), v.kvCache);
      for (let j = Math.max(0, pos0 - c.slots); j < pos0; j++) {
        kSeen.set(kc.subarray((j % c.slots) * kvRow, (j % c.slots + 1) * kvRow), j * kvRow);
        vSeen.set(vc.subarray((j % c.slots) * kvRow, (j % c.slots + 1) * kvRow), j * kvRow);
      }
    }
    const enc = new Encoder(gpu);
    const shape = { tokens, pos0, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, window: c.window };
    if (check) attention(enc, { ...shape, ...v, q: qb, kNew, vNew, kCache, vCache, out, slots: c.slots, partials, segmentKeys });
    kvWrite(enc, { kNew, vNew, kCache, vCache, tokens, pos0, kvHeads: c.kvHeads, headDim: c.headDim, slots: c.slots, dtype: v.kvCache });
    enc.submit();
    if (check) {
      const actual = await readF32(gpu, out, tokens * qRow);
      const where = `${v.strategy}/${v.prefill ?? 'tiled'}/${v.kvCache}, seed ${seed}, chunk ${i} (pos0 ${pos0}, tokens ${tokens}) of ${JSON.stringify(c)}`;
      const expected = attentionRef(q.subarray(pos0 * qRow), kSeen, vSeen, shape);
      expect(maxRelError(actual, expected), where).toBeLessThan(TOL);
      if (v.kvCache === 'f16') {
        const err = maxRelError(actual, attentionRef(q.subarray(pos0 * qRow), k, vals, shape));
        const name = v.prefill === 'flash' ? 'flash prefill' : v.strategy;
        drift[name] = Math.max(drift[name] ?? 0, err);
        expect(err, `drift against exact f32: ${where}`).toBeLessThan(F16_DRIFT_TOL);
      }
    }
    for (const b of [kNew, vNew, qb, out]) b.destroy();
    pos0 += tokens;
  }
  kCache.destroy();
  vCache.destroy();
  destroyAttentionPartials(partials);
}

const tiny = { heads: 4, kvHeads: 2, headDim: 16, window: 16 };
const real = { heads: 32, kvHeads: 8, headDim: 128, window: 4096, slots: 4096 };

for (const strategy of ATTENTION_STRATEGIES) {
  for (const kvCache of KV_CACHE_DTYPES) {
    const v: Variant = { strategy, kvCache };
    describe(`attention ${strategy}, ${kvCache} cache (tiny shape: 4 heads, 2 KV heads, head_dim 16, window 16)`, () => {
      it('prefills a 40-token chunk at position 0, longer than the window', () => play({ ...tiny, slots: 16, chunks: [40] }, v));

      it('continues chunks at pos0 > 0 over a wrapped rolling cache', () =>
        play({ ...tiny, slots: 16, chunks: [23, 5, 17, 9, 31, 3] }, v));

      it('decodes far past the window (pos0 = 100 and on); split: 4 segments of 5 keys, the last of 1', () =>
        play({ ...tiny, slots: 16, chunks: [37, 30, 33, 1, 1, 1], checkFrom: 3, segmentKeys: 5 }, v));

      it('handles a cache of exactly window - 1 slots; split: segments of 3 keys', () =>
        play({ ...tiny, slots: 15, chunks: [20, 7, 1, 1], segmentKeys: 3 }, v));

      it('without a window (window = 0) sees every earlier position; split: segments of 7 keys', () =>
        play({ ...tiny, window: 0, slots: 90, chunks: [29, 1, 21, 1, 30, 1], segmentKeys: 7 }, v));

      it('stays stable with widely spread scores; split: one key per segment (138 segments)', () =>
        play({ ...tiny, window: 0, slots: 200, chunks: [70, 67, 1, 1], qScale: 8, segmentKeys: 1 }, v));

      it('serves other head groupings: 6 query heads on 1 KV head, and plain multi-head (3 on 3)', async () => {
        await play({ heads: 6, kvHeads: 1, headDim: 20, window: 8, slots: 8, chunks: [13, 6, 1, 1], segmentKeys: 3 }, v);
        await play({ heads: 3, kvHeads: 3, headDim: 8, window: 0, slots: 80, chunks: [70, 1, 1], segmentKeys: 64 }, v);
      });

      // Tiles hold 256 keys (tiled) or 64 (split); these runs cross several tiles, wrap the
      // rolling cache inside a tile, and mix cached and chunk keys in one tile.
      it('walks several tiles with a wrapped cache (window 300, 299 slots); split: segments of 100 keys', () =>
        play({ ...tiny, window: 300, slots: 299, chunks: [290, 250, 1, 1, 130, 1], checkFrom: 1, segmentKeys: 100 }, v));

      it('walks several tiles without a window, with spread scores; split: the default segments', () =>
        play({ ...tiny, window: 0, slots: 800, chunks: [600, 1, 77, 1, 3, 1], checkFrom: 1, qScale: 6 }, v));
    });

    describe(`attention ${strategy}, ${kvCache} cache (real shapes)`, () => {
      it('32 heads / 8 KV heads, head_dim 128: prefills 5 tokens, then a 7-token chunk, then decodes', () =>
        play({ ...real, chunks: [5, 7, 1, 1] }, v));
      it('decodes at pos0 = 1000 (default split: 15 segments of 67 keys), then a 3-token chunk', () =>
        play({ ...real, chunks: [1000, 1, 1, 3], checkFrom: 1 }, v));
      it('decodes past a small window over a wrapped cache (window 600, 599 slots); split: 9 segments of 67 keys', () =>
        play({ ...real, window: 600, slots: 599, chunks: [700, 1, 1], checkFrom: 1, segmentKeys: 67 }, v));
      it('10 heads / 2 KV heads (two blocks of 4 and 1), head_dim 64, no window: decodes at 333', () =>
        play({ heads: 10, kvHeads: 2, headDim: 64, window: 0, slots: 400, chunks: [333, 1, 1], checkFrom: 1 }, v));
    });
  }
}

// Prefill attention `flash` (flash.wgsl): blocks of FLASH_TILES.BT = 16 tokens x HB = 4 heads, key
// tiles of BK = 8. Chunks not multiples of the block, windows shorter than the chunk (blocks
// whose first rows see no key of a tile their last rows see), wrapped caches, head groups that
// fill a block partly. Decode steps in between run the tiled kernel.
for (const kvCache of KV_CACHE_DTYPES) {
  const v: Variant = { strategy: 'tiled', prefill: 'flash', kvCache };
  describe(`attention prefill flash, ${kvCache} cache (blocks of ${FLASH_TILES.BT} tokens x ${FLASH_TILES.HB} heads, tiles of ${FLASH_TILES.BK} keys)`, () => {
    it('tiny shape, window 16: a 40-token chunk, then chunks at pos0 > 0 over a wrapped 16-slot cache', () =>
      play({ ...tiny, slots: 16, chunks: [40, 23, 5, 2, 17, 1, 9, 31, 3] }, v));

    it('tiny shape without a window (window 0), with spread scores: 2..150-token chunks', () =>
      play({ ...tiny, window: 0, slots: 400, chunks: [2, 29, 1, 150, 3, 47], qScale: 8 }, v));

    it('6 query heads on 1 KV head (blocks of 4 and 2), head_dim 20, window 8 in an 8-slot cache', () =>
      play({ heads: 6, kvHeads: 1, headDim: 20, window: 8, slots: 8, chunks: [13, 6, 1, 2, 35] }, v));

    it('10 heads / 2 KV heads (blocks of 4 and 1), head_dim 64, window 50 in 49 slots: chunks longer than the window', () =>
      play({ heads: 10, kvHeads: 2, headDim: 64, window: 50, slots: 49, chunks: [37, 2, 133, 1, 61] }, v));

    it('32 heads / 8 KV heads, head_dim 128: 5, 7, 130 tokens, then a window of 100 over a wrapped 99-slot cache', async () => {
      await play({ ...real, chunks: [5, 7, 1, 130] }, v);
      await play({ ...real, window: 100, slots: 99, chunks: [70, 150, 33] }, v);
    });

    it('3 heads on 3 KV heads (one head per block), head_dim 8; head_dim 256 runs the tiled kernel', async () => {
      await play({ heads: 3, kvHeads: 3, headDim: 8, window: 0, slots: 80, chunks: [19, 1, 41] }, v);
      await play({ heads: 2, kvHeads: 1, headDim: 256, window: 0, slots: 40, chunks: [9, 17] }, v);
    });
  });
}

describe('attention: arguments', () => {
  it('refuses a cache too small for the past it must see, and a split without partials', async () => {
    const gpu = await getGpu();
    const b = createStorageBuffer(gpu, 16 * 64 * 4);
    const enc = new Encoder(gpu);
    const a = { q: b, kNew: b, vNew: b, kCache: b, vCache: b, out: b, tokens: 1, heads: 4, kvHeads: 2, headDim: 16, strategy: 'tiled', kvCache: 'f32' } as const;
    expect(() => attention(enc, { ...a, pos0: 40, slots: 14, window: 16 })).toThrow(/cannot hold/);
    expect(() => attention(enc, { ...a, pos0: 40, slots: 39, window: 0 })).toThrow(/cannot hold/);
    expect(() => attention(enc, { ...a, strategy: 'split', pos0: 40, slots: 16, window: 16, segmentKeys: 4 })).toThrow(/partials/);
    const small = createAttentionPartials(gpu, 4, 16, 3);
    expect(() => attention(enc, { ...a, strategy: 'split', pos0: 40, slots: 16, window: 16, segmentKeys: 4, partials: small })).toThrow(/cannot hold 4 segments/);
    enc.submit();
    destroyAttentionPartials(small);
    b.destroy();
  });

  it('splits long contexts to about 264 workgroups and leaves short ones in one pass', () => {
    // 7B: 8 KV heads x 1 head block: 33 segments wanted.
    expect(splitSegments(4096, 8)).toEqual({ segments: 33, segLen: 125 });
    expect(splitSegments(2049, 8)).toEqual({ segments: 32, segLen: 65 });
    expect(splitSegments(1001, 8)).toEqual({ segments: 15, segLen: 67 });
    expect(splitSegments(127, 8)).toEqual({ segments: 1, segLen: 127 });
    expect(splitSegments(16, 2, 5)).toEqual({ segments: 4, segLen: 5 });
  });
});

afterAll(() => {
  console.log('f16 cache: max drift of the attention output against exact f32 keys/values (relative to max |out|):', JSON.stringify(drift));
});
