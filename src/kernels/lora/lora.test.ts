import { describe, expect, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { createStorageBuffer, readF32, uploadF32 } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, maxRelError, poison, randomNormal } from '../../util/testing.ts';
import { matmulRef } from '../matmul/matmul.ref.ts';
import { loraUpdate, siluMul } from './index.ts';
import { loraUpdateRef, mergeLoraRef, siluMulRef } from './lora.ref.ts';

async function checkUpdate(tokens: number, inFeatures: number, outFeatures: number, rank: number, scale: number) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const x = randomNormal(rng, tokens * inFeatures);
  const a = randomNormal(rng, rank * inFeatures, 1 / Math.sqrt(inFeatures));
  const b = randomNormal(rng, outFeatures * rank, 0.5);
  const y0 = randomNormal(rng, tokens * outFeatures); // the projection's output the update adds to
  const xb = uploadF32(gpu, x);
  const ab = uploadF32(gpu, a);
  const bb = uploadF32(gpu, b);
  const yb = uploadF32(gpu, y0);
  const ub = createStorageBuffer(gpu, tokens * rank * 4 + 64); // longer than needed, as the model's shared scratch is
  poison(gpu, ub);
  const enc = new Encoder(gpu);
  loraUpdate(enc, { x: xb, lora: { a: ab, b: bb, rank, inFeatures, outFeatures, scale }, y: yb, u: ub, tokens });
  enc.submit();
  const y = await readF32(gpu, yb, tokens * outFeatures);
  for (const buf of [xb, ab, bb, yb, ub]) buf.destroy();
  const delta = loraUpdateRef(x, a, b, scale, { tokens, inFeatures, outFeatures, rank });
  const expected = Float32Array.from(y0, (v, i) => v + delta[i]!);
  expect(maxRelError(y, expected), `seed ${seed}, ${tokens} tokens, [${outFeatures} x ${inFeatures}] rank ${rank}`).toBeLessThan(1e-5);
}

describe('loraUpdate: y += scale * (x A^T) B^T', () => {
  it('rank 8 at the tiny model q_proj shape, one token (decode)', () => checkUpdate(1, 64, 64, 8, 2));
  it('rank 3 (odd), sizes off the workgroup (in 100, out 70), 13 tokens', () => checkUpdate(13, 100, 70, 3, 0.5));
  it('rank 1, gate_proj-like shape (192 x 64), 5 tokens', () => checkUpdate(5, 64, 192, 1, 16));
  it('rank 16 at down_proj-like shape (4096 x 1000), 3 tokens', () => checkUpdate(3, 1000, 4096, 16, 16 / 4));
  it('rank 64 at a 7B attention shape (4096 x 4096), 2 tokens', () => checkUpdate(2, 4096, 4096, 64, 2));
  it('does nothing without an adapter', async () => {
    const gpu = await getGpu();
    const rng = new Rng(freshSeed());
    const y0 = randomNormal(rng, 6);
    const yb = uploadF32(gpu, y0);
    const enc = new Encoder(gpu);
    loraUpdate(enc, { x: yb, lora: undefined, y: yb, u: yb, tokens: 2 });
    expect(enc.dispatches).toBe(0);
    enc.submit();
    expect(await readF32(gpu, yb, 6)).toEqual(y0);
    yb.destroy();
  });
});

describe('mergeLoraRef', () => {
  it('x (W + scale B A)^T equals x W^T + the update (the CPU oracle agrees with the unmerged form)', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const [tokens, inF, outF, rank, scale] = [3, 37, 29, 5, 0.7];
    const x = randomNormal(rng, tokens * inF);
    const w = randomNormal(rng, outF * inF);
    const a = randomNormal(rng, rank * inF);
    const b = randomNormal(rng, outF * rank);
    const merged = matmulRef(x, mergeLoraRef(w, a, b, scale, rank), tokens, outF, inF);
    const base = matmulRef(x, w, tokens, outF, inF);
    const delta = loraUpdateRef(x, a, b, scale, { tokens, inFeatures: inF, outFeatures: outF, rank });
    expect(maxRelError(merged, Float32Array.from(base, (v, i) => v + delta[i]!)), `seed ${seed}`).toBeLessThan(1e-5);
  });
});

describe('siluMul', () => {
  for (const n of [1, 63, 1000]) {
    it(`matches the reference for ${n} elements`, async () => {
      const gpu = await getGpu();
      const seed = freshSeed();
      const rng = new Rng(seed);
      const gate = randomNormal(rng, n, 4);
      const up = randomNormal(rng, n);
      const gb = uploadF32(gpu, gate);
      const ub = uploadF32(gpu, up);
      const enc = new Encoder(gpu);
      siluMul(enc, { gate: gb, up: ub, n });
      enc.submit();
      const out = await readF32(gpu, gb, n);
      gb.destroy();
      ub.destroy();
      expect(maxRelError(out, siluMulRef(gate, up)), `seed ${seed}`).toBeLessThan(1e-6);
    });
  }
});
