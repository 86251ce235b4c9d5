// The bindings every matrix-product kernel in this folder shares but gemm_words.wgsl (x and w
// by 16-byte words) and gemm_split_reduce.wgsl, and the matvec kernels' weight loads: not a
// kernel itself. Binding 0 is Params (params.wgsl, which the kernels include beside this file).
// w8/up8 serve the 16-bit matvec kernels (silu and fma8 come from sums.wgsl); the gemm kernels
// read weights through a weight reader (gemm_read_dense.wgsl, gemm_read_quant.wgsl) and the
// quantized ones through quant.wgsl instead, which bind nothing of their own.
// Each kernel has one entry point, `main`, and one loop for both products: MATRICES (below)
// is 1 for matmul (y = x w^T) and 2 for SwiGLU (gate in `w`, up in `up`), a constant, so the
// other product's code compiles away. `up` is read only when MATRICES is 2; matmul binds its
// own weights there (index.ts), because a binding named anywhere in an entry point's code
// belongs to its layout.

// #include "params.wgsl"     Params (p)
// #include "sums.wgsl"       silu
// #include "../weights.wgsl"  DTYPE, F32, widen8

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> up: array<vec4<u32>>;

override MATRICES: u32;  // weight matrices per output: 1 (matmul) or 2 (swiglu: gate, up)

fn w8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(w[i], w[i + select(0u, 1u, DTYPE == F32)]);
}

fn up8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(up[i], up[i + select(0u, 1u, DTYPE == F32)]);
}

// The epilogue of every kernel here: output `dst` of y from its sums, `v` (the product, or
// SwiGLU's gate) and `v_up` (SwiGLU's up; unused by matmul): y = v, or y += v with
// p.accumulate (the residual add of o_proj and down_proj), or y = silu(v) * v_up.
fn store_output(dst: u32, v: f32, v_up: f32) {
  if (MATRICES == 2u) {
    y[dst] = silu(v) * v_up;
  } else if (p.accumulate != 0u) {
    y[dst] = v + y[dst];
  } else {
    y[dst] = v;
  }
}
