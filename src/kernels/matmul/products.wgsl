// The interface and helpers every row-owning matrix-product kernel shares (matvec_rows,
// matvec_rows_tokens, gemm_regtile, gemm_broadcast), prepended by src/kernels/matmul/index.ts
// with weights.wgsl. Params is PARAMS in index.ts (checked against this struct at first use).
// w8/up8 serve the matvec kernels (silu and fma8 come from sums.wgsl, prepended to every
// product); the gemm kernels read weights through a weight reader (gemm_read_dense.wgsl,
// gemm_read_quant.wgsl) instead, which also binds nothing of its own.
// `up` is bound only by the SwiGLU entry points (gate in `w`, up in `up`).

struct Params {
  rows: u32,        // rows in this part
  cols: u32,        // in_features
  tokens: u32,
  y_stride: u32,    // out_features of the whole matrix
  y_offset: u32,    // first output column this part writes (part.row0)
  accumulate: u32,  // 1: y += x w^T, 0: y = x w^T (matmul only)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> up: array<vec4<u32>>;

fn w8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(w[i], w[i + select(0u, 1u, DTYPE == F32)]);
}

fn up8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(up[i], up[i + select(0u, 1u, DTYPE == F32)]);
}

