import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { readF32, uploadF32, writeBuffer } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, maxRelError, randomNormal, poison } from '../util/testing.ts';
import { rope, ropeTable } from './rope.ts';
import { ropeRef } from './rope.ref.ts';

const THETA = 10000; // Mistral-7B / OpenChat 3.5 rope_theta
const tables = new Map<string, GPUBuffer>();

async function table(maxPositions: number, headDim: number): Promise<GPUBuffer> {
  const key = `${maxPositions}x${headDim}`;
  let t = tables.get(key);
  if (!t) {
    t = ropeTable(await getGpu(), maxPositions, headDim, THETA);
    tables.set(key, t);
  }
  return t;
}

/** Rotates a random q (`heads`) and k (`kvHeads`) in one dispatch; both must match the reference. */
async function check(tokens: number, heads: number, kvHeads: number, headDim: number, pos0: number, maxPositions: number) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const q = randomNormal(rng, tokens * heads * headDim);
  const k = randomNormal(rng, tokens * kvHeads * headDim);
  const qb = uploadF32(gpu, q);
  const kb = uploadF32(gpu, k);
  const enc = new Encoder(gpu);
  rope(enc, { q: qb, k: kb, table: await table(maxPositions, headDim), tokens, heads, kvHeads, headDim, pos0 });
  enc.submit();
  const where = `seed ${seed}, tokens ${tokens}, heads ${heads}/${kvHeads}, headDim ${headDim}, pos0 ${pos0}`;
  expect(maxRelError(await readF32(gpu, qb, q.length), ropeRef(q, tokens, heads, headDim, pos0, THETA)), `q: ${where}`).toBeLessThan(1e-5);
  expect(maxRelError(await readF32(gpu, kb, k.length), ropeRef(k, tokens, kvHeads, headDim, pos0, THETA)), `k: ${where}`).toBeLessThan(1e-5);
  qb.destroy();
  kb.destroy();
}

/** The batched entry point: each token at its own position (rows of the batch descriptor); each row must match the reference at that position. */
async function checkRows(positions: number[], heads: number, kvHeads: number, headDim: number, maxPositions: number) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const tokens = positions.length;
  const q = randomNormal(rng, tokens * heads * headDim);
  const k = randomNormal(rng, tokens * kvHeads * headDim);
  const qb = uploadF32(gpu, q);
  const kb = uploadF32(gpu, k);
  const rows = uploadF32(gpu, new Float32Array(tokens * 2));
  writeBuffer(gpu, rows, new Uint32Array(positions.flatMap((pos, t) => [pos, t % 3])));
  const enc = new Encoder(gpu);
  rope(enc, { q: qb, k: kb, table: await table(maxPositions, headDim), tokens, heads, kvHeads, headDim, pos0: Math.max(...positions), batchRows: rows });
  enc.submit();
  const gotQ = await readF32(gpu, qb, q.length);
  const gotK = await readF32(gpu, kb, k.length);
  positions.forEach((pos, t) => {
    const where = `seed ${seed}, row ${t} at position ${pos}`;
    const qRow = heads * headDim;
    const kRow = kvHeads * headDim;
    expect(maxRelError(gotQ.subarray(t * qRow, (t + 1) * qRow), ropeRef(q.subarray(t * qRow, (t + 1) * qRow), 1, heads, headDim, pos, THETA)), `q: ${where}`).toBeLessThan(1e-5);
    expect(maxRelError(gotK.subarray(t * kRow, (t + 1) * kRow), ropeRef(k.subarray(t * kRow, (t + 1) * kRow), 1, kvHeads, headDim, pos, THETA)), `k: ${where}`).toBeLessThan(1e-5);
  });
  for (const b of [qb, kb, rows]) b.destroy();
}

describe('rope', () => {
  it('rotates each row of a batched step at its own position (rows entry point)', async () => {
    await checkRows([5, 0, 63, 17, 18, 19, 2], 5, 3, 20, 64);
    await checkRows([30000, 7, 1], 32, 8, 128, 32768);
  });

  it('matches the float64 reference at the tiny shape (4 q heads, 2 k heads)', () => check(9, 4, 2, 16, 3, 64));
  it('matches at awkward head counts (5 q heads, 3 k heads, head_dim 20)', () => check(4, 5, 3, 20, 7, 64));
  it('matches at the real shape (q 32 heads, k 8 heads, head_dim 128)', () => check(5, 32, 8, 128, 0, 32768));
  it('stays accurate at large positions (30000)', async () => {
    await check(3, 32, 8, 128, 30000, 32768);
    await check(2, 32, 8, 128, 32766, 32768);
  });

  it('rotates pairs (i, i + headDim/2), not interleaved pairs', async () => {
    // A unit vector along element 0 at position 1 must move into element headDim/2 (by sin(1)),
    // where Meta's interleaved convention would move it into element 1.
    const gpu = await getGpu();
    const headDim = 16;
    const qb = uploadF32(gpu, new Float32Array(headDim));
    const kb = uploadF32(gpu, new Float32Array(headDim));
    poison(gpu, qb);
    poison(gpu, kb);
    const unit = new Float32Array(headDim);
    unit[0] = 1;
    writeBuffer(gpu, qb, unit);
    writeBuffer(gpu, kb, unit);
    const enc = new Encoder(gpu);
    rope(enc, { q: qb, k: kb, table: await table(64, headDim), tokens: 1, heads: 1, kvHeads: 1, headDim, pos0: 1 });
    enc.submit();
    for (const b of [qb, kb]) {
      const y = await readF32(gpu, b, headDim);
      b.destroy();
      expect(y[0]).toBeCloseTo(Math.cos(1), 6);
      expect(y[headDim / 2]).toBeCloseTo(Math.sin(1), 6);
      expect(y[1]).toBe(0);
    }
  });

  it('refuses positions beyond the table', async () => {
    const gpu = await getGpu();
    const xb = uploadF32(gpu, new Float32Array(16));
    const t = await table(64, 16);
    const enc = new Encoder(gpu);
    expect(() => rope(enc, { q: xb, k: xb, table: t, tokens: 2, heads: 1, kvHeads: 1, headDim: 16, pos0: 63 })).toThrow(/exceed/);
    enc.submit();
    xb.destroy();
  });
});
