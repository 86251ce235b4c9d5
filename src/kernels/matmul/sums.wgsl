// The scalar helpers the matrix-product kernels share, included by each that uses them: not a
// kernel itself.

// SiLU, the SwiGLU gate's activation: silu(g) = g / (1 + exp(-g)).
fn silu(g: f32) -> f32 {
  return g / (1.0 + exp(-g));
}

// acc + dot(w, (xa, xb)) as a chain of fused multiply-adds: the decode kernels' summation
// order, which the batched decode step relies on to add a row's sums as forward() does.
fn fma8(w: array<vec4<f32>, 2>, xa: vec4<f32>, xb: vec4<f32>, acc: f32) -> f32 {
  var s = acc;
  s = fma(w[0].x, xa.x, s);
  s = fma(w[0].y, xa.y, s);
  s = fma(w[0].z, xa.z, s);
  s = fma(w[0].w, xa.w, s);
  s = fma(w[1].x, xb.x, s);
  s = fma(w[1].y, xb.y, s);
  s = fma(w[1].z, xb.z, s);
  s = fma(w[1].w, xb.w, s);
  return s;
}

// acc + a row's products over one chunk of 8 columns, as every decode-shaped kernel adds them
// (matvec_rows.wgsl, gemm_broadcast.wgsl, fused_rows.wgsl): `chain` (matmul) through fma8,
// otherwise (SwiGLU) as two dots, so a row's sums are the same bits whichever of them runs.
fn add8(w: array<vec4<f32>, 2>, xa: vec4<f32>, xb: vec4<f32>, acc: f32, chain: bool) -> f32 {
  if (chain) {
    return fma8(w, xa, xb, acc);
  }
  return acc + (dot(w[0], xa) + dot(w[1], xb));
}
