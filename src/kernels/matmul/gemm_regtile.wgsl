// Prefill matrix products, register-tiled (plan: every matvec strategy uses this for > 8 tokens):
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set: the
//             fused residual add of o_proj and down_proj)
//   swiglu (MATRICES 2): y[t, i] = silu(g) * u,  g = sum_c x[t, c] * gate[i, c],  u = sum_c x[t, c] * up[i, c],
//             silu(g) = g / (1 + exp(-g))  (Mistral's MLP front half in one pass over both matrices)
//
// Layouts
//   x: f32 [tokens, cols] row-major, read as vec4<f32>.
//   w (gate), up: weight rows [rows, cols] of one GpuMatrix part, HF layout [out_features,
//      in_features], stored as f32, f16 or bf16 (DTYPE, weights.wgsl) or q8/q4 (QFORMAT,
//      quant.wgsl), read as vec4<u32> a block at a time through the weight reader the wrapper
//      binds to <weight_reader> (gemm_read_dense.wgsl: 8 weights; gemm_read_quant.wgsl: a group of 32 and its
//      scale). gate and up are split at the same rows.
//   y: f32 [tokens, y_stride] row-major; this part writes columns y_offset .. y_offset + rows
//      (y_stride = rows of the whole matrix, y_offset = part.row0), so the parts of a split
//      matrix fill disjoint column ranges of one output.
//
// Work split (WG, LANES, ROWS_PER_GROUP, TOKENS: override constants set from TILES in index.ts)
//   A workgroup of WG invocations is WG / LANES "lane groups" of LANES consecutive invocations.
//   A lane group owns ROWS_PER_GROUP weight rows (of each matrix) and the workgroup's TOKENS
//   tokens. Its lanes walk the columns in blocks (BLOCK_CHUNKS chunks of 8 columns): lane l
//   takes blocks l, l + LANES, ..., so the lanes together read contiguous bytes of a row per
//   step. Per chunk of its block a lane has 8 weights per row (one block load per row serves
//   its chunks) and loads 2 x vec4s per token, and keeps ROWS_PER_GROUP x TOKENS running sums
//   (per matrix) in registers: each weight load serves TOKENS tokens, each x load serves every
//   row. At the end the lanes' partial sums of each output meet in workgroup memory (one
//   barrier) and are added. Why this shape suits lavapipe: bench/RESULTS.md, "Kernel tuning".
//   SwiGLU adds a second weight stream per row (up beside gate) and the silu product as the
//   epilogue, in the same loop.
//
// Dispatch: (ceil(rows / (WG / LANES * ROWS_PER_GROUP)), ceil(tokens / TOKENS)) workgroups per part.
// Assumes: cols % 8 == 0, so every weight row and x row starts on a 16-byte boundary; other
// widths use gemm_words.wgsl. q8/q4: cols % 32 == 0.

// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings x, w, y, up; MATRICES, store_output
// #include "sums.wgsl"        silu
// #include <weight_reader>    BLOCK_CHUNKS, WBlock, row_start, weight_block, chunk_of: gemm_read_dense.wgsl or gemm_read_quant.wgsl

override WG: u32;
override LANES: u32;           // invocations sharing one row
override ROWS_PER_GROUP: u32;  // rows (of each matrix) a lane group computes, <= MAX_ROWS
override TOKENS: u32;          // tokens per workgroup, <= MAX_TOKENS
// MAX_ROWS, MAX_TOKENS: declared by the loader from CAPACITY (../table.ts).

// The lanes' partial sums, [matrix][row][token][lane]: swiglu's up after gate's.
override PARTIALS: u32 = WG * ROWS_PER_GROUP * TOKENS;
var<workgroup> partial: array<f32, MATRICES * PARTIALS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let swiglu = MATRICES == 2u;
  let lane = li % LANES;
  let group = li / LANES;
  let rows_per_workgroup = WG / LANES * ROWS_PER_GROUP;
  let row0 = wid.x * rows_per_workgroup + group * ROWS_PER_GROUP;
  let chunks = p.cols / 8u;

  // This group's rows. Rows past the end re-read the last row (harmless) so that the loop has
  // no per-row branches; their sums are discarded below.
  var wrow: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS_PER_GROUP; i++) {
    wrow[i] = row_start(min(row0 + i, p.rows - 1u));
  }

  let t0 = wid.y * TOKENS;
  var xrow: array<u32, MAX_TOKENS>;
  for (var j = 0u; j < TOKENS; j++) {
    xrow[j] = min(t0 + j, p.tokens - 1u) * chunks * 2u;
  }
  var acc: array<array<f32, MAX_TOKENS>, MAX_ROWS>;     // the product, or swiglu's gate
  var acc_up: array<array<f32, MAX_TOKENS>, MAX_ROWS>;  // swiglu's up
  let blocks = chunks / BLOCK_CHUNKS;
  let steps = (blocks + LANES - 1u) / LANES;
  for (var s = 0u; s < steps; s++) {
    let b = s * LANES + lane;
    if (b < blocks) {
      var blk: array<WBlock, MAX_ROWS>;
      var ublk: array<WBlock, MAX_ROWS>;
      for (var i = 0u; i < ROWS_PER_GROUP; i++) {
        blk[i] = weight_block(&w, wrow[i], b);
        if (swiglu) {
          ublk[i] = weight_block(&up, wrow[i], b);
        }
      }
      for (var c = 0u; c < BLOCK_CHUNKS; c++) {
        let k = b * BLOCK_CHUNKS + c;
        var xa: array<vec4<f32>, MAX_TOKENS>;
        var xb: array<vec4<f32>, MAX_TOKENS>;
        for (var j = 0u; j < TOKENS; j++) {
          xa[j] = x[xrow[j] + 2u * k];
          xb[j] = x[xrow[j] + 2u * k + 1u];
        }
        for (var i = 0u; i < ROWS_PER_GROUP; i++) {
          let wv = chunk_of(blk[i], c);
          for (var j = 0u; j < TOKENS; j++) {
            acc[i][j] += dot(wv[0], xa[j]) + dot(wv[1], xb[j]);
          }
          if (swiglu) {
            let uv = chunk_of(ublk[i], c);
            for (var j = 0u; j < TOKENS; j++) {
              acc_up[i][j] += dot(uv[0], xa[j]) + dot(uv[1], xb[j]);
            }
          }
        }
      }
    }
  }

  for (var i = 0u; i < ROWS_PER_GROUP; i++) {
    for (var j = 0u; j < TOKENS; j++) {
      let slot = ((group * ROWS_PER_GROUP + i) * TOKENS + j) * LANES + lane;
      partial[slot] = acc[i][j];
      if (swiglu) {
        partial[PARTIALS + slot] = acc_up[i][j];
      }
    }
  }
  workgroupBarrier();

  for (var o = li; o < rows_per_workgroup * TOKENS; o += WG) {
    let row = wid.x * rows_per_workgroup + o / TOKENS;
    let t = t0 + o % TOKENS;
    var sum = 0.0;
    var up_sum = 0.0;
    for (var l = 0u; l < LANES; l++) {
      sum += partial[o * LANES + l];
      if (swiglu) {
        up_sum += partial[PARTIALS + o * LANES + l];
      }
    }
    if (row < p.rows && t < p.tokens) {
      store_output(t * p.y_stride + p.y_offset + row, sum, up_sum);
    }
  }
}
