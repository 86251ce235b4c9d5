import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, readBuffer, uploadF32, writeBuffer } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { encodeFromF32, f16ToF32, f32ToF16 } from '../util/half.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, randomNormal } from '../util/testing.ts';
import { decodeKvCache, KV_CACHE_DTYPES, kvBytesPerElement, type KvCacheDtype } from './kv_cache.ts';
import { kvWrite } from './kv_write.ts';
import { kvWriteRef } from './kv_write.ref.ts';
import { poisonKvCache } from './kv_cache.testing.ts';

/**
 * WGSL lets pack2x16float round to either f16 neighbour of a value; lavapipe rounds to nearest
 * even, as the reference does. Accept the other neighbour too, and nothing else.
 */
function sameAsCache(actual: number, expected: number, exact: number, dtype: KvCacheDtype): boolean {
  if (Object.is(actual, expected)) return true;
  if (dtype === 'f32' || Number.isNaN(exact)) return false;
  const spacing = Math.abs(f16ToF32(f32ToF16(exact) + 1) - f16ToF32(f32ToF16(exact)));
  return Math.abs(actual - exact) < spacing && f16ToF32(f32ToF16(actual)) === actual;
}

/** Writes chunks of the given lengths in sequence; after each, both caches must equal the reference. */
async function play(dtype: KvCacheDtype, kvHeads: number, headDim: number, slots: number, chunks: number[], poisoned: boolean) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const rowLen = kvHeads * headDim;
  const bytes = slots * rowLen * kvBytesPerElement(dtype);
  // Expected contents as the cache holds them, and the exact f32 values they round from.
  const start = () => (poisoned ? new Float32Array(slots * rowLen).fill(NaN) : randomNormal(rng, slots * rowLen));
  const kExact = start();
  const vExact = start();
  const kExpected = kExact.map((x) => (dtype === 'f32' ? x : f16ToF32(f32ToF16(x))));
  const vExpected = vExact.map((x) => (dtype === 'f32' ? x : f16ToF32(f32ToF16(x))));
  const kCache = createStorageBuffer(gpu, bytes);
  const vCache = createStorageBuffer(gpu, bytes);
  if (poisoned) {
    poisonKvCache(gpu, kCache, dtype);
    poisonKvCache(gpu, vCache, dtype);
  } else {
    writeBuffer(gpu, kCache, encodeFromF32(kExact, dtype));
    writeBuffer(gpu, vCache, encodeFromF32(vExact, dtype));
  }
  let pos0 = 0;
  for (const tokens of chunks) {
    const kChunk = randomNormal(rng, tokens * rowLen);
    const vChunk = randomNormal(rng, tokens * rowLen);
    const kNew = uploadF32(gpu, kChunk);
    const vNew = uploadF32(gpu, vChunk);
    const enc = new Encoder(gpu);
    kvWrite(enc, { kNew, vNew, kCache, vCache, tokens, pos0, kvHeads, headDim, slots, dtype });
    enc.submit();
    kvWriteRef(kExpected, kChunk, tokens, pos0, rowLen, slots, dtype);
    kvWriteRef(vExpected, vChunk, tokens, pos0, rowLen, slots, dtype);
    kvWriteRef(kExact, kChunk, tokens, pos0, rowLen, slots);
    kvWriteRef(vExact, vChunk, tokens, pos0, rowLen, slots);
    const where = `${dtype} cache, seed ${seed}, chunk of ${tokens} at pos0 ${pos0}, slots ${slots}`;
    // Exact copies (f32) or one rounding (f16): compare value by value (Object.is also equates
    // NaN with NaN in untouched slots).
    for (const [buffer, expected, exact, name] of [[kCache, kExpected, kExact, 'k'], [vCache, vExpected, vExact, 'v']] as const) {
      const actual = decodeKvCache(await readBuffer(gpu, buffer, 0, bytes), dtype);
      const bad = actual.findIndex((x, i) => !sameAsCache(x, expected[i]!, exact[i]!, dtype));
      expect(bad, `${name}: ${where}: element ${bad} is ${actual[bad]}, expected ${expected[bad]}`).toBe(-1);
    }
    kNew.destroy();
    vNew.destroy();
    pos0 += tokens;
  }
  // Once every slot has been written, nothing of the poison may remain.
  if (poisoned && pos0 >= slots) {
    expect(decodeKvCache(await readBuffer(gpu, kCache, 0, bytes), dtype).some(Number.isNaN)).toBe(false);
  }
  kCache.destroy();
  vCache.destroy();
}

for (const dtype of KV_CACHE_DTYPES) {
  describe(`kvWrite (${dtype} cache)`, () => {
    it('writes chunks into a wrapping cache (tiny shape)', () => play(dtype, 2, 16, 16, [5, 13, 1, 1, 9], false));
    it('keeps only the last `slots` rows of a chunk longer than the cache', () => play(dtype, 2, 16, 16, [7, 40, 3], true));
    it('writes a row length that is not a multiple of the workgroup (3 KV heads, head_dim 20)', () =>
      play(dtype, 3, 20, 11, [4, 9, 1], true));
    it('writes at the real shape (8 KV heads, head_dim 128)', () => play(dtype, 8, 128, 300, [37, 1, 290], false));
  });
}
