// The uniform of every matrix-product kernel in this folder but gemm_split_reduce.wgsl, which
// each includes: not a kernel itself. Params is PARAMS in index.ts
// (checked against this struct at first use); a kernel reads the fields it needs, the wrapper
// fills them all.

struct Params {
  rows: u32,          // rows in this part
  cols: u32,          // in_features
  tokens: u32,
  y_stride: u32,      // out_features of the whole matrix
  y_offset: u32,      // first output column this part writes (part.row0)
  accumulate: u32,    // 1: y += x w^T, 0: y = x w^T (matmul only)
  groups_x: u32,      // workgroups along x of a 2-D grid (matvec_lanes, qmatvec_lanes)
  splits: u32,        // K ranges, workgroups along z (gemm_tiled)
  split_chunks: u32,  // 8-column chunks per K range (gemm_tiled)
}

@group(0) @binding(0) var<uniform> p: Params;
