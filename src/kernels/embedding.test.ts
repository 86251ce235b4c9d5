import { describe, expect, it } from 'vitest';
import { getGpu } from '../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, isQuantized, matrixRowBytes, readF32, uploadU32 } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { Rng } from '../util/rng.ts';
import { freshSeed, poison } from '../util/testing.ts';
import { embedding } from './embedding.ts';
import { embeddingRef } from './embedding.ref.ts';
import { randomMatrix, randomQuantMatrix } from './matmul/fixtures.ts';

/** Every table format the gather reads: widened (embedding.wgsl) or dequantized (embedding_quant.wgsl). */
const DTYPES = ['f32', 'f16', 'bf16', 'q8', 'q4'] as const;

async function check(opts: { vocab: number; hidden: number; tokens: number; dtype: (typeof DTYPES)[number]; maxPartBytes?: number }) {
  const gpu = await getGpu();
  const seed = freshSeed();
  const rng = new Rng(seed);
  const { vocab, hidden, tokens, dtype } = opts;
  // Quantized: random N(0, 1) weights quantized; `values` are their codes dequantized plainly (the reference).
  const table = isQuantized(dtype) ? randomQuantMatrix(gpu, rng, vocab, hidden, dtype, opts.maxPartBytes) : randomMatrix(gpu, rng, vocab, hidden, dtype, opts.maxPartBytes);
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
  // A gather widens exactly, and a code times an f16 scale is exact in f32: every value must match bit for bit.
  let mismatches = 0;
  for (let i = 0; i < expected.length; i++) if (!Object.is(got[i], expected[i])) mismatches++;
  expect(mismatches, `seed ${seed}, vocab ${vocab} x ${hidden} ${dtype}, ${tokens} tokens, ${table.matrix.parts.length} parts`).toBe(0);
  return table.matrix.parts.length;
}

describe('embedding', () => {
  for (const dtype of DTYPES) {
    it(`gathers rows exactly, ${dtype}`, async () => {
      // Quantized rows are whole groups of 32: 96 columns is 3 groups (not a multiple of the workgroup).
      const hidden = isQuantized(dtype) ? 96 : 66;
      await check({ vocab: 1000, hidden, tokens: 17, dtype });
      await check({ vocab: 37, hidden: 64, tokens: 1, dtype });
    });

    it(`gathers from every part of a split table, ${dtype}`, async () => {
      const hidden = isQuantized(dtype) ? 160 : 64;
      const rowBytes = matrixRowBytes(dtype, hidden);
      expect(await check({ vocab: 4099, hidden, tokens: 130, dtype, maxPartBytes: 1000 * rowBytes })).toBe(5);
      await check({ vocab: 4099, hidden: isQuantized(dtype) ? 64 : 66, tokens: 40, dtype, maxPartBytes: 999 * matrixRowBytes(dtype, isQuantized(dtype) ? 64 : 66) });
    });

    it(`writes zeros for ids beyond the vocabulary, ${dtype}`, async () => {
      const gpu = await getGpu();
      const rng = new Rng(freshSeed());
      const cols = 32;
      const table = isQuantized(dtype) ? randomQuantMatrix(gpu, rng, 10, cols, dtype, 4 * matrixRowBytes(dtype, cols)) : randomMatrix(gpu, rng, 10, cols, dtype, 4 * matrixRowBytes(dtype, cols));
      const ids = uploadU32(gpu, new Uint32Array([3, 10, 999]));
      const out = createStorageBuffer(gpu, 3 * cols * 4);
      poison(gpu, out);
      const enc = new Encoder(gpu);
      embedding(enc, { ids, table: table.matrix, out, tokens: 3 });
      enc.submit();
      const got = await readF32(gpu, out, 3 * cols);
      expect(Array.from(got.subarray(0, cols))).toEqual(Array.from(table.values.subarray(3 * cols, 4 * cols)));
      expect(Array.from(got.subarray(cols))).toEqual(new Array(2 * cols).fill(0));
      ids.destroy();
      out.destroy();
      destroyMatrix(table.matrix);
    });
  }

  it('real hidden size 4096, split in two parts as the 32002-row vocabulary is', async () => {
    // 32002 x 4096 bf16 is 250 MiB (q8: 133 MiB): force the same two-part split with a quarter
    // of the rows (quantized: a sixteenth, as quantizing on the host is the slow part here).
    for (const dtype of ['bf16', 'q8', 'q4'] as const) {
      const vocab = isQuantized(dtype) ? 2002 : 8002;
      expect(await check({ vocab, hidden: 4096, tokens: 9, dtype, maxPartBytes: ((vocab + 1) / 2) * matrixRowBytes(dtype, 4096) })).toBe(2);
    }
  });
});
