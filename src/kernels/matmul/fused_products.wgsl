// The interface both fused kernels (fused_lanes.wgsl, fused_rows.wgsl) share, included by
// both: not a kernel itself. Params is PARAMS in fused.ts (checked against this struct at first
// use). Bindings: 0 Params, 1 x, 2 norm, 3 w0 (q_proj | gate_proj), 4 y0 (q | y), 5 w1
// (k_proj | up_proj), 6 y1 (k), 7 w2 (v_proj), 8 y2 (v). Each kernel has one entry point, `main`,
// for both fronts (MATRICES below), so every binding belongs to its layout: SwiGLU binds gate_proj
// again at 7 and a scratch buffer, never written, at 6 and 8 (fused.ts).

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

override MATRICES: u32;  // weight matrices per output row: 1 (qkv: q, k or v_proj) or 2 (swiglu: gate_proj in w0, up_proj in w1)

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

// The matrix workgroup g's rows belong to (0 q_proj, 1 k_proj, 2 v_proj; SwiGLU: 0, gate_proj
// with up_proj beside it), its row count and its first workgroup: qkv's dispatch lays the three
// matrices' workgroups one after another (p.group1, p.group2).
struct Matrix {
  m: u32,
  rows: u32,
  first: u32,
}

fn matrix_of(g: u32) -> Matrix {
  if (MATRICES == 2u) {
    return Matrix(0u, p.rows0, 0u);
  }
  let m = select(0u, 1u, g >= p.group1) + select(0u, 1u, g >= p.group2);
  return Matrix(m, select(select(p.rows0, p.rows1, m == 1u), p.rows2, m == 2u), select(select(0u, p.group1, m == 1u), p.group2, m == 2u));
}

// Stores a qkv output v at `dst` of matrix m's output (y0 q, y1 k, y2 v).
fn store_qkv(m: u32, dst: u32, v: f32) {
  if (m == 0u) {
    y0[dst] = v;
  } else if (m == 1u) {
    y1[dst] = v;
  } else {
    y2[dst] = v;
  }
}
