/**
 * Matrix products against weight matrices: every linear layer of the model
 * (q/k/v/o_proj, down_proj, lm_head) is `y = x W^T` with W in Hugging Face layout
 * [out_features, in_features]. This is the hot path of inference: decode reads every
 * weight once per token, so the kernel's speed is the model's speed.
 */
import { Encoder, getPipeline, params, type Binding } from '../gpu/encoder.ts';
import { dtypeCode, weightKernelSource } from './weights.ts';
import type { GpuMatrix, WeightDType } from '../gpu/buffers.ts';

/** Tokens per workgroup of the prefill (matrix-matrix) variant of matmul.wgsl. */
export const PREFILL_TOKENS = 8;
/** Output rows per workgroup of matmul.wgsl's `main` (8 lane groups x 4 rows). */
const ROWS_PER_WORKGROUP = 32;
/** Output rows per workgroup of matmul.wgsl's `matvec` (8 invocations x 6 rows). */
const MATVEC_ROWS_PER_WORKGROUP = 48;
/** Output rows per workgroup of the general-shape fallback, matmul_words.wgsl. */
const WORDS_ROWS_PER_WORKGROUP = 4;
const WORDS_TOKENS_PER_WORKGROUP = 64;

/**
 * y[t, r] = sum_c x[t, c] * w[r, c] for t < tokens, r < w.rows; with `accumulate`,
 * y[t, r] += ... (the residual add fused into o_proj / down_proj).
 * x: f32 [tokens, w.cols]; y: f32 [tokens, w.rows].
 * `gemm`: the token-tiled kernel (8 tokens per tile) whatever the token count. Each token's
 * sums are added in the same order in every tile slot, so a row's result is then the same
 * in a step of any size; the one-token `matvec` adds in another order. Batched steps
 * (continuous batching) set it, so a sequence decodes the same alone and under load.
 */
export function matmul(
  enc: Encoder,
  a: { x: Binding; w: GpuMatrix; y: Binding; tokens: number; accumulate?: boolean; gemm?: boolean },
): void {
  const { w, tokens } = a;
  if (tokens === 0) return;
  if (w.cols % 2 !== 0) throw new Error(`matmul: cols must be even, got ${w.cols}`);
  const accumulate = a.accumulate ? 1 : 0;
  // Rows of 8-column chunks start on 16-byte boundaries only when cols % 8 == 0; every real
  // model width is, and the slower word-at-a-time kernel covers the rest.
  const fast = w.cols % 8 === 0;
  const dtype = dtypeCode(w.dtype);
  for (const part of w.parts) {
    const p = params([part.rows, w.cols, tokens, w.rows, part.row0, accumulate]);
    if (fast && tokens === 1 && !a.gemm) {
      const pipeline = getPipeline(enc.gpu, weightKernelSource('matmul.wgsl'), 'matvec', { DTYPE: dtype }, `matvec ${w.dtype}`);
      enc.dispatch(pipeline, p, [a.x, part.buffer, a.y], [Math.ceil(part.rows / MATVEC_ROWS_PER_WORKGROUP)]);
    } else if (fast) {
      const perGroup = tokens === 1 && !a.gemm ? 1 : PREFILL_TOKENS;
      const pipeline = getPipeline(enc.gpu, weightKernelSource('matmul.wgsl'), 'main', { DTYPE: dtype, TOKENS: perGroup }, `matmul ${w.dtype} x${perGroup}`);
      enc.dispatch(pipeline, p, [a.x, part.buffer, a.y], [Math.ceil(part.rows / ROWS_PER_WORKGROUP), Math.ceil(tokens / perGroup)]);
    } else {
      const pipeline = getPipeline(enc.gpu, weightKernelSource('matmul_words.wgsl'), 'main', { DTYPE: dtype }, `matmul_words ${w.dtype}`);
      enc.dispatch(pipeline, p, [a.x, part.buffer, a.y], [
        Math.ceil(part.rows / WORDS_ROWS_PER_WORKGROUP),
        Math.ceil(tokens / WORDS_TOKENS_PER_WORKGROUP),
      ]);
    }
  }
}
