// Prefill matrix products, x shared by subgroup broadcast (plan `gemm=broadcast`):
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set: the
//             fused residual add of o_proj and down_proj)
//   swiglu (MATRICES 2): y[t, i] = silu(g) * u,  g = sum_c x[t, c] * gate[i, c],  u = sum_c x[t, c] * up[i, c]
//
// Layouts: as gemm_regtile.wgsl (x f32 [tokens, cols] read as vec4<f32>; w, up weight rows of
// one GpuMatrix part, f32/f16/bf16 or q8/q4, read as vec4<u32> through the weight reader the
// wrapper binds to <weight_reader>: gemm_read_dense.wgsl or gemm_read_quant.wgsl; y f32 [tokens, y_stride],
// this part's columns y_offset .. y_offset + rows).
//
// Work split (WG, ROWS, TOKENS: override constants set from TILES in index.ts)
//   A workgroup owns WG * ROWS consecutive weight rows (of each matrix) and TOKENS tokens.
//   Invocation i owns rows i, i + WG, ... (ROWS of them) and keeps ROWS x TOKENS running sums.
//   The columns are walked in chunks of 8, in order, by every invocation alone: each output is
//   one serial sum over the columns, whatever TOKENS or the token count is.
//   An invocation loads each of its rows a block at a time (weight_block: 8 widened weights, or a
//   quantized group of 32 with its scale) and takes the block's chunks in order (chunk_of).
//   Per chunk an invocation has 8 weights of each of its rows (its own loads) and
//   a share of the chunk's x tile: lane l of a subgroup loads tokens l, l + 8, ... (TOKENS / 8
//   of them, 2 vec4 each). Every lane then takes each token's 8 x values from lane t % 8 by
//   subgroupBroadcast. So x reaches each subgroup once per chunk, not once per lane.
//   Why: on lavapipe (one invocation = one CPU SIMD lane) a load at a per-lane address costs a
//   compare, a branch and a scalar load per lane and 32-bit word, while a broadcast from a
//   fixed lane is one vector shuffle: the kernel trades most loads for shuffles
//   (bench/RESULTS.md, "Prefill").
//   Any subgroup size >= 8 works: lanes 0..7 of each subgroup hold the tile, the other lanes
//   load copies that are never broadcast.
//
// Dispatch: (ceil(rows / (WG * ROWS)), ceil(tokens / TOKENS)) workgroups per part.
// Assumes: cols % 8 == 0 (q8/q4: cols % 32 == 0); subgroups of at least 8 lanes (the plan checks the adapter).

enable subgroups;
// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings x, w, y, up; MATRICES, store_output
// #include "sums.wgsl"        silu, add8
// #include <weight_reader>    BLOCK_CHUNKS, WBlock, row_start, weight_block, chunk_of: gemm_read_dense.wgsl or gemm_read_quant.wgsl

override WG: u32;
override ROWS: u32;    // rows per invocation, <= MAX_ROWS
override TOKENS: u32;  // tokens per workgroup, a multiple of 8, <= MAX_TOKENS
// MAX_ROWS, MAX_TOKENS: declared by the loader from CAPACITY (../table.ts).
const MAX_LOADS = MAX_TOKENS / 8u;


alias Sums = array<array<f32, MAX_TOKENS>, MAX_ROWS>;
alias Rows8 = array<array<vec4<f32>, 2>, MAX_ROWS>;

// acc[i][j] += w_i . x_j over one chunk of 8 columns, for every row i of the invocation, as
// matvec_rows.wgsl adds a chunk (add8: an fma chain for matmul, two dots for SwiGLU), so a row's
// sums are matvec_rows' bit for bit and a decode step of more than 8 sequences can take this
// kernel (the kernel table's wideDecode cell, ../table.ts).
fn add_token(acc: ptr<function, Sums>, wv: ptr<function, Rows8>, j: u32, xa: vec4<f32>, xb: vec4<f32>) {
  for (var i = 0u; i < ROWS; i++) {
    (*acc)[i][j] = add8((*wv)[i], xa, xb, (*acc)[i][j], MATRICES == 1u);
  }
}

// Tokens 8m .. 8m + 7 of the tile, from lanes 0..7 (held in xa, xb), into every lane's sums.
fn add_eight(acc: ptr<function, Sums>, wv: ptr<function, Rows8>, m: u32, xa: vec4<f32>, xb: vec4<f32>) {
  let j = 8u * m;
  add_token(acc, wv, j, subgroupBroadcast(xa, 0u), subgroupBroadcast(xb, 0u));
  add_token(acc, wv, j + 1u, subgroupBroadcast(xa, 1u), subgroupBroadcast(xb, 1u));
  add_token(acc, wv, j + 2u, subgroupBroadcast(xa, 2u), subgroupBroadcast(xb, 2u));
  add_token(acc, wv, j + 3u, subgroupBroadcast(xa, 3u), subgroupBroadcast(xb, 3u));
  add_token(acc, wv, j + 4u, subgroupBroadcast(xa, 4u), subgroupBroadcast(xb, 4u));
  add_token(acc, wv, j + 5u, subgroupBroadcast(xa, 5u), subgroupBroadcast(xb, 5u));
  add_token(acc, wv, j + 6u, subgroupBroadcast(xa, 6u), subgroupBroadcast(xb, 6u));
  add_token(acc, wv, j + 7u, subgroupBroadcast(xa, 7u), subgroupBroadcast(xb, 7u));
}

// The rows of the invocation, and the x row (vec4 index) of each token this lane loads.
// Rows and tokens past the end re-read the last one (no branches in the loop, uniform
// control flow for the broadcasts); their sums are never stored.
fn row_of(wid: u32, li: u32, i: u32) -> u32 {
  return min(wid * WG * ROWS + i * WG + li, p.rows - 1u);
}

fn x_base(wid: u32, lane: u32, m: u32, chunks: u32) -> u32 {
  return min(wid * TOKENS + 8u * m + lane % 8u, p.tokens - 1u) * chunks * 2u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
  let swiglu = MATRICES == 2u;
  let chunks = p.cols / 8u;
  var wrow: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    wrow[i] = row_start(row_of(wid.x, li, i));
  }
  var xrow: array<u32, MAX_LOADS>;
  for (var m = 0u; m < TOKENS / 8u; m++) {
    xrow[m] = x_base(wid.y, lane, m, chunks);
  }
  var acc: Sums;     // the product, or swiglu's gate
  var acc_up: Sums;  // swiglu's up
  for (var b = 0u; b < chunks / BLOCK_CHUNKS; b++) {
    var blk: array<WBlock, MAX_ROWS>;
    var ublk: array<WBlock, MAX_ROWS>;
    for (var i = 0u; i < ROWS; i++) {
      blk[i] = weight_block(&w, wrow[i], b);
      if (swiglu) {
        ublk[i] = weight_block(&up, wrow[i], b);
      }
    }
    for (var c = 0u; c < BLOCK_CHUNKS; c++) {
      let k = b * BLOCK_CHUNKS + c;
      var wv: Rows8;
      var uv: Rows8;
      for (var i = 0u; i < ROWS; i++) {
        wv[i] = chunk_of(blk[i], c);
        if (swiglu) {
          uv[i] = chunk_of(ublk[i], c);
        }
      }
      for (var m = 0u; m < TOKENS / 8u; m++) {
        let xa = x[xrow[m] + 2u * k];
        let xb = x[xrow[m] + 2u * k + 1u];
        add_eight(&acc, &wv, m, xa, xb);
        if (swiglu) {
          add_eight(&acc_up, &uv, m, xa, xb);
        }
      }
    }
  }
  for (var i = 0u; i < ROWS; i++) {
    let row = wid.x * WG * ROWS + i * WG + li;
    for (var j = 0u; j < TOKENS; j++) {
      let t = wid.y * TOKENS + j;
      if (row < p.rows && t < p.tokens) {
        store_output(t * p.y_stride + p.y_offset + row, acc[i][j], acc_up[i][j]);
      }
    }
  }
}
