import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, readF32, readU32, uploadF32 } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, randomNormal, poison } from '../util/testing.ts';
import { topK } from './topk.ts';
import { topKRef } from './topk.ref.ts';

async function check(logits: Float32Array, k: number, seed: number) {
  const gpu = await getGpu();
  const n = logits.length;
  const lb = uploadF32(gpu, logits);
  const ids = createStorageBuffer(gpu, k * 4);
  const values = createStorageBuffer(gpu, k * 4);
  poison(gpu, ids);
  poison(gpu, values);
  const enc = new Encoder(gpu);
  topK(enc, { logits: lb, n, k, outIds: ids, outValues: values });
  enc.submit();
  const actualIds = await readU32(gpu, ids, k);
  const actualValues = await readF32(gpu, values, k);
  for (const b of [lb, ids, values]) b.destroy();
  const expected = topKRef(logits, n, k);
  const where = `seed ${seed}, n ${n}, k ${k}`;
  expect(Array.from(actualIds), where).toEqual(Array.from(expected.ids));
  // Values are copied, not computed: they must be the very same floats (+0 and -0 compare equal).
  expect(actualValues.every((x, i) => x === expected.values[i]), where).toBe(true);
}

const VOCAB = 32002;

describe('topK', () => {
  for (const k of [1, 40, 1000]) {
    it(`selects the ${k} largest of ${VOCAB} distinct-ish logits`, async () => {
      const seed = freshSeed();
      await check(randomNormal(new Rng(seed), VOCAB, 4), k, seed);
    });

    it(`breaks ties by lower index (k = ${k}, many equal logits)`, async () => {
      const seed = freshSeed();
      // Rounded to a coarse grid, so the k-th value is shared by many indices (also -0 and +0).
      const logits = Float32Array.from(randomNormal(new Rng(seed), VOCAB), (x) => Math.round(x * 4) / 4);
      await check(logits, k, seed);
    });
  }

  it('handles k = n, negative and infinite logits', async () => {
    const seed = freshSeed();
    const logits = randomNormal(new Rng(seed), 50, 10);
    logits[3] = -Infinity;
    logits[7] = -Infinity;
    logits[11] = Infinity;
    await check(logits, 50, seed);
    await check(logits.map((x) => -Math.abs(x)), 13, seed);
  });
});
