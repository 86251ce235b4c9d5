/**
 * The block formats' products (matmul with and without accumulate, SwiGLU) through every kernel
 * the table can pick for them: matvec=rows/subgroup/workgroup for 1 token, 2..8 tokens and
 * batched decode steps of more than 8, and gemm=regtile/broadcast/tiled for prefill, against
 * the CPU product over dequantize()d weights (check.testing.ts: the tolerance).
 * Each (format, kernel, token tile) is a pipeline compiled for seconds on lavapipe (3-5 s for the
 * lanes and tiled kernels, cold: every format x every kernel took 8.5 min on 2 cores, 5 s from
 * Mesa's shader cache): shapes are spread over the cases rather than crossed, and Q4_K (most
 * of a Q4_K_M file) runs every kernel, the others matvec=rows (their span_dot) and gemm=regtile.
 * Their GPU kernels differ from Q4_K's only by the decode file's group_codes, which the gemm
 * here and embedding.test.ts (bit for bit) check; OPENCHAT_GGML_TESTS=all runs every format
 * through every kernel. Rows are never a multiple of a tile;
 * K-quant rows are 3 or 5 super-blocks, the 32-weight formats' 3 or 5 groups (q5_0: a half pair).
 */
import { describe, it } from 'vitest';
import { getGpu } from '../../gpu/device.ts';
import { runnable } from '../plan.ts';
import { GGML_TYPES } from './types.ts';
import { BLOCK_TYPES, checkGgmlMatmul, checkGgmlSwiGLU } from './check.testing.ts';

const profile = (await getGpu()).profile;
const MATVEC = runnable(profile, 'matvec');
const GEMM = runnable(profile, 'gemm');
const ALL = process.env.OPENCHAT_GGML_TESTS === 'all';
const FULL = new Set(['Q4_K']);

describe.each(BLOCK_TYPES)('%s products', (type) => {
  const k = GGML_TYPES[type].blockValues === 256;
  const [narrow, wide] = k ? [768, 1280] : [96, 160];

  const matvecs = ALL || FULL.has(type) ? MATVEC : MATVEC.filter((m) => m === 'rows');
  const gemms = ALL || FULL.has(type) ? GEMM : GEMM.filter((g) => g === 'regtile');

  it.each(matvecs)('decode, matvec=%s: 1 token, 2..8 tokens, a batched decode step of 11, accumulate, split matrices', async (matvec) => {
    const plan = { matvec };
    await checkGgmlMatmul({ type, rows: 203, cols: wide, tokens: 1, plan });
    await checkGgmlMatmul({ type, rows: 37, cols: narrow, tokens: 3, plan, accumulate: true });
    await checkGgmlMatmul({ type, rows: 101, cols: narrow, tokens: 11, plan, batch: 'decode', maxPartBytes: 40 * 2048 });
    await checkGgmlSwiGLU({ type, rows: 45, cols: wide, tokens: 1, plan });
    await checkGgmlSwiGLU({ type, rows: 29, cols: narrow, tokens: 7, plan, batch: 'decode' });
  });

  it.each(gemms)('prefill, gemm=%s: 9..32 and more tokens, accumulate, a batched prefill step', async (gemm) => {
    const plan = { matvec: 'rows' as const, gemm };
    await checkGgmlMatmul({ type, rows: 70, cols: narrow, tokens: 19, plan, accumulate: true });
    await checkGgmlMatmul({ type, rows: 45, cols: wide, tokens: 37, plan, maxPartBytes: 16 * 1024 });
    await checkGgmlSwiGLU({ type, rows: 37, cols: narrow, tokens: 13, plan });
    await checkGgmlSwiGLU({ type, rows: 21, cols: narrow, tokens: 3, plan, batch: 'prefill' });
  });
});
