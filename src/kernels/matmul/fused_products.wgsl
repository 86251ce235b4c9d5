// The interface both fused kernels (fused_lanes.wgsl, fused_rows.wgsl) share, included by
// both: not a kernel itself. Params is PARAMS in fused.ts (checked against this struct at first
// use). Bindings: 0 Params, 1 x, 2 norm, 3 w0 (q_proj | gate_proj), 4 y0 (q | y), 5 w1
// (k_proj | up_proj), 6 y1 (k), 7 w2 (v_proj), 8 y2 (v); `swiglu` uses 0..5.

// #include "../weights.wgsl"  DTYPE, F32, widen8

struct Params {
  cols: u32,      // hidden_size: in_features of every matrix, length of the norm
  tokens: u32,    // 1 in fused_rows.wgsl
  groups_x: u32,  // workgroups along x of the dispatch grid
  eps: f32,       // rms_norm_eps (NORM only)
  rows0: u32,     // rows of q_proj (qkv) or of gate_proj and up_proj (swiglu)
  rows1: u32,     // rows of k_proj (qkv)
  rows2: u32,     // rows of v_proj (qkv)
  group1: u32,    // first workgroup of k_proj (qkv)
  group2: u32,    // first workgroup of v_proj (qkv)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> norm: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w0: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> y0: array<f32>;
@group(0) @binding(5) var<storage, read> w1: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read_write> y1: array<f32>;
@group(0) @binding(7) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read_write> y2: array<f32>;

fn w0_8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(w0[i], w0[i + select(0u, 1u, DTYPE == F32)]);
}

fn w1_8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(w1[i], w1[i + select(0u, 1u, DTYPE == F32)]);
}

fn w2_8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(w2[i], w2[i + select(0u, 1u, DTYPE == F32)]);
}

// Eight weights of matrix m (0 q_proj, 1 k_proj, 2 v_proj); m is uniform over the workgroup.
fn qkv8(m: u32, i: u32) -> array<vec4<f32>, 2> {
  if (m == 0u) {
    return w0_8(i);
  }
  if (m == 1u) {
    return w1_8(i);
  }
  return w2_8(i);
}
