import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, uploadU32, type WeightDType } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, poison } from '../util/testing.ts';
import { embedding } from './embedding.ts';
import { embeddingRef } from './embedding.ref.ts';
import { randomMatrix } from './matmul/fixtures.ts';

async function check(opts: { vocab: number; hidden: number; tokens: number; dtype: WeightDType; maxPartBytes?: number }) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { vocab, hidden, tokens, dtype } = opts;
  const table = randomMatrix(gpu, rng, vocab, hidden, dtype, opts.maxPartBytes);
  // Random ids plus the first and last rows, which sit at the edges of the parts.
  const ids = new Uint32Array(tokens);
  for (let t = 0; t < tokens; t++) ids[t] = rng.int(0, vocab);
  ids[0] = vocab - 1;
  if (tokens > 1) ids[1] = 0;
  const idsBuf = uploadU32(gpu, ids);
  const out = createStorageBuffer(gpu, tokens * hidden * 4);
  poison(gpu, out);
  const enc = new Encoder(gpu);
  embedding(enc, { ids: idsBuf, table: table.matrix, out, tokens });
  enc.submit();
  const got = await readF32(gpu, out, tokens * hidden);
  idsBuf.destroy();
  out.destroy();
  destroyMatrix(table.matrix);
  const expected = embeddingRef(table.values, ids, hidden);
  // A gather widens exactly: every value must match bit for bit.
  let mismatches = 0;
  for (let i = 0; i < expected.length; i++) if (!Object.is(got[i], expected[i])) mismatches++;
  expect(mismatches, `seed ${seed}, vocab ${vocab} x ${hidden} ${dtype}, ${tokens} tokens, ${table.matrix.parts.length} parts`).toBe(0);
  return table.matrix.parts.length;
}

describe('embedding', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    it(`gathers rows exactly, ${dtype}`, async () => {
      await check({ vocab: 1000, hidden: 66, tokens: 17, dtype });
      await check({ vocab: 37, hidden: 64, tokens: 1, dtype });
    });
  }

  it('gathers from every part of a split table', async () => {
    expect(await check({ vocab: 4099, hidden: 64, tokens: 130, dtype: 'f16', maxPartBytes: 1000 * 128 })).toBe(5);
    await check({ vocab: 4099, hidden: 66, tokens: 40, dtype: 'f32', maxPartBytes: 999 * 66 * 4 });
  });

  it('real hidden size 4096, split in two parts as the 32002-row vocabulary is', async () => {
    // 32002 x 4096 f16 is 250 MiB; force the same two-part split with a quarter of the rows.
    expect(await check({ vocab: 8002, hidden: 4096, tokens: 9, dtype: 'bf16', maxPartBytes: 4001 * 4096 * 2 })).toBe(2);
  });

  it('writes zeros for ids beyond the vocabulary', async () => {
    const gpu = await getGpu();
    const rng = new Rng(freshSeed());
    const table = randomMatrix(gpu, rng, 10, 8, 'f16', 4 * 16);
    const ids = uploadU32(gpu, new Uint32Array([3, 10, 999]));
    const out = createStorageBuffer(gpu, 3 * 8 * 4);
    poison(gpu, out);
    const enc = new Encoder(gpu);
    embedding(enc, { ids, table: table.matrix, out, tokens: 3 });
    enc.submit();
    const got = await readF32(gpu, out, 24);
    expect(Array.from(got.subarray(0, 8))).toEqual(Array.from(table.values.subarray(24, 32)));
    expect(Array.from(got.subarray(8))).toEqual(new Array(16).fill(0));
    ids.destroy();
    out.destroy();
    destroyMatrix(table.matrix);
  });
});
