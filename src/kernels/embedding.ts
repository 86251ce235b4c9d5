/**
 * Token embedding lookup on the device (embed_tokens): one f32 row per token id.
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, type Binding } from '../gpu/encoder.ts';
import { isQuantized, type GpuMatrix } from '../gpu/buffers.ts';
import { dtypeCode, weightKernelSource } from './weights.ts';

/** Invocations per workgroup (embedding.wgsl's WG override); each copies two columns of one token. */
const WG = 64;
const PARAMS = new UniformLayout({ cols: 'u32', row0: 'u32', rows: 'u32', is_last: 'u32' });

/** out[t, :] = table[ids[t], :] widened to f32. ids: u32 [tokens]; out: f32 [tokens, table.cols]. */
export function embedding(enc: Encoder, a: { ids: Binding; table: GpuMatrix; out: Binding; tokens: number }): void {
  const { table, tokens } = a;
  if (tokens === 0) return;
  if (table.cols % 2 !== 0) throw new Error(`embedding: cols must be even, got ${table.cols}`);
  // The loader keeps embed_tokens in the checkpoint's format (a row is read once per token).
  if (isQuantized(table.dtype)) throw new Error(`embedding: the table is ${table.dtype}; embed_tokens is read unquantized (f32, f16 or bf16)`);
  const pipeline = getPipeline(enc.gpu, kernelSource(weightKernelSource('embedding.wgsl'), PARAMS), 'main', { DTYPE: dtypeCode(table.dtype), WG }, `embedding ${table.dtype}`);
  const groups = Math.ceil(table.cols / 2 / WG);
  table.parts.forEach((part, i) => {
    const isLast = i === table.parts.length - 1 ? 1 : 0;
    enc.dispatch(pipeline, PARAMS.pack({ cols: table.cols, row0: part.row0, rows: part.rows, is_last: isLast }), [a.ids, part.buffer, a.out], [groups, tokens]);
  });
}
