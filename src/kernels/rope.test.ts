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

async function check(tokens: number, heads: number, headDim: number, pos0: number, maxPositions: number) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const x = randomNormal(new Rng(seed), tokens * heads * headDim);
  const xb = uploadF32(gpu, x);
  const enc = new Encoder(gpu);
  rope(enc, { x: xb, table: await table(maxPositions, headDim), tokens, heads, headDim, pos0 });
  enc.submit();
  const y = await readF32(gpu, xb, x.length);
  xb.destroy();
  const err = maxRelError(y, ropeRef(x, tokens, heads, headDim, pos0, THETA));
  expect(err, `seed ${seed}, tokens ${tokens}, heads ${heads}, headDim ${headDim}, pos0 ${pos0}`).toBeLessThan(1e-5);
}

describe('rope', () => {
  it('matches the float64 reference at the tiny shape', () => check(9, 4, 16, 3, 64));
  it('matches at the real shape for q (32 heads) and k (8 heads)', async () => {
    await check(5, 32, 128, 0, 32768);
    await check(7, 8, 128, 11, 32768);
  });
  it('stays accurate at large positions (30000)', async () => {
    await check(3, 32, 128, 30000, 32768);
    await check(2, 8, 128, 32766, 32768);
  });

  it('rotates pairs (i, i + headDim/2), not interleaved pairs', async () => {
    // A unit vector along element 0 at position 1 must move into element headDim/2 (by sin(1)),
    // where Meta's interleaved convention would move it into element 1.
    const gpu = await getGpu();
    const headDim = 16;
    const xb = uploadF32(gpu, new Float32Array(headDim));
    poison(gpu, xb);
    const unit = new Float32Array(headDim);
    unit[0] = 1;
    writeBuffer(gpu, xb, unit);
    const enc = new Encoder(gpu);
    rope(enc, { x: xb, table: await table(64, headDim), tokens: 1, heads: 1, headDim, pos0: 1 });
    enc.submit();
    const y = await readF32(gpu, xb, headDim);
    xb.destroy();
    expect(y[0]).toBeCloseTo(Math.cos(1), 6);
    expect(y[headDim / 2]).toBeCloseTo(Math.sin(1), 6);
    expect(y[1]).toBe(0);
  });

  it('refuses positions beyond the table', async () => {
    const gpu = await getGpu();
    const xb = uploadF32(gpu, new Float32Array(16));
    const t = await table(64, 16);
    const enc = new Encoder(gpu);
    expect(() => rope(enc, { x: xb, table: t, tokens: 2, heads: 1, headDim: 16, pos0: 63 })).toThrow(/exceed/);
    enc.submit();
    xb.destroy();
  });
});
