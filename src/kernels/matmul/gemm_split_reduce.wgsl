// The second pass of gemm_tiled.wgsl's K split: adds the splits' raw sums in split order and
// applies the epilogue.
//   matmul (MATRICES 1): y[t, r] (+)= sum_z part[z, 0, t, r]
//   swiglu (MATRICES 2): y[t, r]    = silu(g) * u,  g = sum_z part[z, 0, t, r],  u = sum_z part[z, 1, t, r]
// Layouts: part f32 [splits, M, tokens, rows] (M = 1 for matmul, 2 for swiglu); y f32
// [tokens, y_stride], this part's columns y_offset .. y_offset + rows.
// Dispatch: ceil(tokens * rows / WG) workgroups (at most 65535 * WG outputs per part).

// #include "sums.wgsl"        silu

struct Params {
  rows: u32,
  tokens: u32,
  y_stride: u32,
  y_offset: u32,
  accumulate: u32,
  splits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

override WG: u32;
override MATRICES: u32;  // 1 (matmul) or 2 (swiglu), as the product's

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = p.tokens * p.rows;
  if (gid.x >= n) {
    return;
  }
  var sum = 0.0;
  var up_sum = 0.0;
  for (var z = 0u; z < p.splits; z++) {
    sum += part[(MATRICES * z) * n + gid.x];
    if (MATRICES == 2u) {
      up_sum += part[(MATRICES * z + 1u) * n + gid.x];
    }
  }
  let dst = (gid.x / p.rows) * p.y_stride + p.y_offset + gid.x % p.rows;
  if (MATRICES == 2u) {
    sum = silu(sum) * up_sum;
  } else if (p.accumulate != 0u) {
    sum += y[dst];
  }
  y[dst] = sum;
}
