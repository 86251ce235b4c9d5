import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { readF32, uploadF32 } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxAbsError, randomNormal, poison } from '../util/testing.ts';
import { kvWrite } from './kv_write.ts';
import { kvWriteRef } from './kv_write.ref.ts';

/** Writes chunks of the given lengths in sequence; after each, both caches must equal the reference. */
async function play(kvHeads: number, headDim: number, slots: number, chunks: number[], poisoned: boolean) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const rowLen = kvHeads * headDim;
  const kExpected = poisoned ? new Float32Array(slots * rowLen).fill(NaN) : randomNormal(rng, slots * rowLen);
  const vExpected = poisoned ? new Float32Array(slots * rowLen).fill(NaN) : randomNormal(rng, slots * rowLen);
  const kCache = uploadF32(gpu, kExpected);
  const vCache = uploadF32(gpu, vExpected);
  if (poisoned) {
    poison(gpu, kCache);
    poison(gpu, vCache);
  }
  let pos0 = 0;
  for (const tokens of chunks) {
    const kChunk = randomNormal(rng, tokens * rowLen);
    const vChunk = randomNormal(rng, tokens * rowLen);
    const kNew = uploadF32(gpu, kChunk);
    const vNew = uploadF32(gpu, vChunk);
    const enc = new Encoder(gpu);
    kvWrite(enc, { kNew, vNew, kCache, vCache, tokens, pos0, kvHeads, headDim, slots });
    enc.submit();
    kvWriteRef(kExpected, kChunk, tokens, pos0, rowLen, slots);
    kvWriteRef(vExpected, vChunk, tokens, pos0, rowLen, slots);
    const where = `seed ${seed}, chunk of ${tokens} at pos0 ${pos0}, slots ${slots}`;
    // Exact copies: compare bit for bit (Object.is also equates NaN with NaN in untouched slots).
    const kActual = await readF32(gpu, kCache, slots * rowLen);
    const vActual = await readF32(gpu, vCache, slots * rowLen);
    expect(kActual.every((x, i) => Object.is(x, kExpected[i])), `k: ${where}`).toBe(true);
    expect(vActual.every((x, i) => Object.is(x, vExpected[i])), `v: ${where}`).toBe(true);
    kNew.destroy();
    vNew.destroy();
    pos0 += tokens;
  }
  // Once every slot has been written, nothing of the poison may remain.
  if (poisoned && pos0 >= slots) expect(maxAbsError(await readF32(gpu, kCache, slots * rowLen), kExpected)).toBe(0);
  kCache.destroy();
  vCache.destroy();
}

describe('kvWrite', () => {
  it('writes chunks into a wrapping cache (tiny shape)', () => play(2, 16, 16, [5, 13, 1, 1, 9], false));
  it('keeps only the last `slots` rows of a chunk longer than the cache', () => play(2, 16, 16, [7, 40, 3], true));
  it('writes at the real shape (8 KV heads, head_dim 128)', () => play(8, 128, 300, [37, 1, 290], false));
});
