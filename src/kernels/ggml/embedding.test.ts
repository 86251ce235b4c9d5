/**
 * The embedding gather over a token_embd in each block format (Q4_K_M files store it as Q4_K):
 * every value bit for bit dequantize()'s, in a table split into parts, ids at the parts' edges,
 * the output poisoned first.
 */
import { describe, expect, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, matrixRowBytes, readF32, uploadU32 } from '../../gpu/buffers.ts';
import { Encoder } from '../../gpu/encoder.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed, poison } from '../../util/testing.ts';
import { embedding } from '../embedding.ts';
import { embeddingRef } from '../embedding.ref.ts';
import { BLOCK_TYPES, randomFileRows, uploadGgml } from './check.testing.ts';
import { ggmlDeviceDType } from './pack.ts';
import { GGML_TYPES } from './types.ts';

describe.each(BLOCK_TYPES)('%s embedding gather', (type) => {
  it('rows bit for bit dequantize()\'s, split table, ids at the edges of the parts', async () => {
    const gpu = await getGpu();
    const seed = freshSeed();
    const rng = new Rng(seed);
    const vocab = 53;
    const hidden = GGML_TYPES[type].blockValues === 256 ? 1280 : 160;
    const { file, values } = randomFileRows(rng, type, vocab, hidden);
    const table = uploadGgml(gpu, type, file, vocab, hidden, 20 * matrixRowBytes(ggmlDeviceDType(type), hidden));
    expect(table.parts.length).toBe(3);
    const ids = Uint32Array.from([vocab - 1, 0, 19, 20, 39, 40, ...Array.from({ length: 7 }, () => rng.int(0, vocab))]);
    const idsBuf = uploadU32(gpu, ids);
    const out = createStorageBuffer(gpu, ids.length * hidden * 4);
    poison(gpu, out);
    const enc = new Encoder(gpu);
    embedding(enc, { ids: idsBuf, table, out, tokens: ids.length });
    enc.submit();
    const got = await readF32(gpu, out, ids.length * hidden);
    idsBuf.destroy();
    out.destroy();
    destroyMatrix(table);
    const expected = embeddingRef(values, ids, hidden);
    let mismatches = 0;
    for (let i = 0; i < expected.length; i++) if (!Object.is(got[i], expected[i])) mismatches++;
    expect(mismatches, `seed ${seed}, ${type} ${vocab}x${hidden}`).toBe(0);
  });
});
