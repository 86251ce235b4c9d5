/**
 * Token embedding lookup on the device (embed_tokens): one f32 row per token id.
 */
import { Encoder, getPipeline, params, wgsl, type Binding } from '../gpu/encoder.ts';
import type { GpuMatrix } from '../gpu/buffers.ts';
import { dtypeCode, weightKernelSource } from './weights.ts';

/** out[t, :] = table[ids[t], :] widened to f32. ids: u32 [tokens]; out: f32 [tokens, table.cols]. */
export function embedding(enc: Encoder, a: { ids: Binding; table: GpuMatrix; out: Binding; tokens: number }): void {
  const { table, tokens } = a;
  if (tokens === 0) return;
  if (table.cols % 2 !== 0) throw new Error(`embedding: cols must be even, got ${table.cols}`);
  const pipeline = getPipeline(enc.gpu, weightKernelSource('embedding.wgsl'), 'main', { DTYPE: dtypeCode(table.dtype) }, `embedding ${table.dtype}`);
  const groups = Math.ceil(table.cols / 2 / 64);
  table.parts.forEach((part, i) => {
    const isLast = i === table.parts.length - 1 ? 1 : 0;
    enc.dispatch(pipeline, params([table.cols, part.row0, part.rows, isLast]), [a.ids, part.buffer, a.out], [groups, tokens]);
  });
}
