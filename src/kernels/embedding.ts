/**
 * Token embedding lookup on the device (embed_tokens): one f32 row per token id. Three kernels,
 * by how the table is stored: embedding.wgsl widens f32/f16/bf16 words, embedding_quant.wgsl
 * dequantizes q8/q4 groups in registers (quant.wgsl), ggml/embedding_ggml.wgsl groups of
 * llama.cpp's block formats (a GGUF token_embd: its format's decode file bound to
 * <ggml_format>). All are preceded by embedding_part.wgsl: their parameters, and which row of
 * a table part each token reads.
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, wgsl, type Binding } from '../gpu/encoder.ts';
import { ggmlBlockValues, isGgmlBlocks, isQuantized, QUANT_GROUP, type GpuMatrix } from '../gpu/buffers.ts';
import { formatConstant } from './weights.ts';

/**
 * Invocations per workgroup (the kernels' WG override): embedding.wgsl's each copy two
 * columns of one token, embedding_quant.wgsl's one group of 32.
 */
const WG = 64;
const QUANT_WG = 32;
const PARAMS = new UniformLayout({ cols: 'u32', row0: 'u32', rows: 'u32', is_last: 'u32' });

/** out[t, :] = table[ids[t], :] widened (or dequantized) to f32. ids: u32 [tokens]; out: f32 [tokens, table.cols]. */
export function embedding(enc: Encoder, a: { ids: Binding; table: GpuMatrix; out: Binding; tokens: number }): void {
  const { table, tokens } = a;
  if (tokens === 0) return;
  let pipeline: GPUComputePipeline;
  let groups: number;
  if (isGgmlBlocks(table.dtype)) {
    const block = ggmlBlockValues(table.dtype);
    if (table.cols % block !== 0) throw new Error(`embedding: a ${table.dtype} table needs cols % ${block} == 0, got ${table.cols}`);
    const source = kernelSource(wgsl('ggml/embedding_ggml.wgsl', import.meta.url, { ggml_format: `ggml/${table.dtype}.wgsl` }), PARAMS);
    pipeline = getPipeline(enc.gpu, source, 'main', { WG: QUANT_WG }, `embedding ${table.dtype}`);
    groups = Math.ceil(table.cols / QUANT_GROUP / QUANT_WG);
  } else if (isQuantized(table.dtype)) {
    if (table.cols % QUANT_GROUP !== 0) throw new Error(`embedding: a ${table.dtype} table needs cols % ${QUANT_GROUP} == 0, got ${table.cols}`);
    const source = kernelSource(wgsl('embedding_quant.wgsl', import.meta.url), PARAMS);
    pipeline = getPipeline(enc.gpu, source, 'main', { ...formatConstant(table.dtype), WG: QUANT_WG }, `embedding ${table.dtype}`);
    groups = Math.ceil(table.cols / QUANT_GROUP / QUANT_WG);
  } else {
    if (table.cols % 2 !== 0) throw new Error(`embedding: cols must be even, got ${table.cols}`);
    pipeline = getPipeline(enc.gpu, kernelSource(wgsl('embedding.wgsl', import.meta.url), PARAMS), 'main', { ...formatConstant(table.dtype), WG }, `embedding ${table.dtype}`);
    groups = Math.ceil(table.cols / 2 / WG);
  }
  table.parts.forEach((part, i) => {
    const isLast = i === table.parts.length - 1 ? 1 : 0;
    enc.dispatch(pipeline, PARAMS.pack({ cols: table.cols, row0: part.row0, rows: part.rows, is_last: isLast }), [a.ids, part.buffer, a.out], [groups, tokens]);
  });
}
