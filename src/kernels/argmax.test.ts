import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { readU32, uploadF32, uploadU32 } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, randomNormal } from '../util/testing.ts';
import { argmax } from './argmax.ts';
import { argmaxRef } from './argmax.ref.ts';

async function runArgmax(logits: Float32Array, n: number, rows: number): Promise<Uint32Array> {
  const gpu = await getGpu();
  const lb = uploadF32(gpu, logits);
  const out = uploadU32(gpu, new Uint32Array(rows).fill(0xdeadbeef)); // poison: never a valid index here
  const enc = new Encoder(gpu);
  argmax(enc, { logits: lb, n, rows, out });
  enc.submit();
  const result = await readU32(gpu, out, rows);
  lb.destroy();
  out.destroy();
  return result;
}

describe('argmax', () => {
  it('finds the maximum of vocabulary-sized rows (n = 32002), lowest index on ties', async () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const n = 32002;
    const rows = 5;
    const logits = randomNormal(rng, n * rows, 3);
    // Row 0: plain random. Row 1: a tie between two lanes of different invocations, the later
    // index scanned first by its invocation. Row 2: a tie inside one invocation's stride.
    // Row 3: every value equal. Row 4: the maximum in the last element.
    const tie1 = [rng.int(5000, n), rng.int(0, 5000)];
    for (const i of tie1) logits[n + i] = 50;
    const a = rng.int(0, n - 128);
    logits[2 * n + a] = 50;
    logits[2 * n + a + 64] = 50;
    logits.fill(-1.5, 3 * n, 4 * n);
    logits[5 * n - 1] = 50;
    const expected = argmaxRef(logits, n, rows);
    expect(expected[1]).toBe(Math.min(...tie1)); // the reference itself honours the tie rule
    expect(expected[3]).toBe(0);
    expect(Array.from(await runArgmax(logits, n, rows)), `seed ${seed}`).toEqual(Array.from(expected));
  });

  it('handles rows shorter than the workgroup, and rows of -infinity', async () => {
    const seed = freshSeed();
    const n = 5;
    const rows = 7;
    const logits = randomNormal(new Rng(seed), n * rows);
    logits.fill(-Infinity, 6 * n, 7 * n);
    logits[2 * n + 1] = logits[2 * n + 3] = 9;
    expect(Array.from(await runArgmax(logits, n, rows)), `seed ${seed}`).toEqual(Array.from(argmaxRef(logits, n, rows)));
  });
});
