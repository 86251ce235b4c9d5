/**
 * The fused front half of Mistral's MLP: y = silu(x gate_proj^T) * (x up_proj^T),
 * computed in one pass over both weight matrices (see swiglu.wgsl). down_proj then
 * runs as a plain matmul with accumulate (the residual add).
 */
import { Encoder, getPipeline, params, wgsl, type Binding } from '../gpu/encoder.ts';
import type { GpuMatrix } from '../gpu/buffers.ts';
import { PREFILL_TOKENS } from './matmul.ts';
import { dtypeCode, weightKernelSource } from './weights.ts';

const ROWS_PER_WORKGROUP = 16; // `main`: 8 lane groups x 2 rows
const MATVEC_ROWS_PER_WORKGROUP = 48; // `matvec`: 16 invocations x 3 rows

/**
 * y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c]).
 * x: f32 [tokens, hidden]; gate, up: [intermediate, hidden]; y: f32 [tokens, intermediate].
 */
export function matmulSwiGLU(
  enc: Encoder,
  a: { x: Binding; gate: GpuMatrix; up: GpuMatrix; y: Binding; tokens: number; gemm?: boolean },
): void {
  const { gate, up, tokens } = a;
  if (tokens === 0) return;
  if (gate.rows !== up.rows || gate.cols !== up.cols || gate.dtype !== up.dtype) {
    throw new Error(`matmulSwiGLU: gate [${gate.rows}, ${gate.cols}] ${gate.dtype} and up [${up.rows}, ${up.cols}] ${up.dtype} differ`);
  }
  if (gate.cols % 8 !== 0) throw new Error(`matmulSwiGLU: hidden size must be a multiple of 8, got ${gate.cols}`);
  // One token (decode): the `matvec` entry point; more: the token-tiled `main`.
  // `gemm`: the tiled kernel whatever the token count (a batched step: see matmul).
  const decode = tokens === 1 && !a.gemm;
  const perGroup = decode ? 1 : PREFILL_TOKENS;
  const pipeline = decode
    ? getPipeline(enc.gpu, weightKernelSource('swiglu.wgsl'), 'matvec', { DTYPE: dtypeCode(gate.dtype) }, `swiglu matvec ${gate.dtype}`)
    : getPipeline(
        enc.gpu,
        weightKernelSource('swiglu.wgsl'),
        'main',
        { DTYPE: dtypeCode(gate.dtype), TOKENS: perGroup },
        `swiglu ${gate.dtype} x${perGroup}`,
      );
  // Both matrices have the same shape and dtype, so uploadMatrix split them at the same rows.
  gate.parts.forEach((g, i) => {
    const u = up.parts[i];
    if (!u || u.row0 !== g.row0 || u.rows !== g.rows) throw new Error('matmulSwiGLU: gate and up are split differently');
    enc.dispatch(pipeline, params([g.rows, gate.cols, tokens, gate.rows, g.row0]), [a.x, g.buffer, u.buffer, a.y], [
      Math.ceil(g.rows / (decode ? MATVEC_ROWS_PER_WORKGROUP : ROWS_PER_WORKGROUP)),
      Math.ceil(tokens / perGroup),
    ]);
  });
}
