// Decode matrix-vector products for GPUs, 1 to 8 tokens, plans `matvec=subgroup` and
// `matvec=workgroup`:
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set:
//             the fused residual add of o_proj and down_proj)
//   swiglu (MATRICES 2): y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c])
//
// Layouts: as gemm_regtile.wgsl (x f32 [tokens, cols] read as vec4<f32>; w/gate/up one part's
// rows [rows, cols] in DTYPE read as vec4<u32>, 16 bytes = 8 f16/bf16 or 4 f32 values; y f32
// [tokens, y_stride], this part's outputs at columns y_offset ..).
//
// Work split (WG, ROWS, TOKENS, MATRICES: override constants set from TILES in index.ts)
//   A workgroup of WG invocations owns ROWS rows (of each of MATRICES weight matrices: 1 for
//   matmul, 2 for swiglu) and TOKENS tokens. All WG lanes walk the same rows: lane l takes the
//   8-column chunks l, l + WG, l + 2 WG, ..., so neighbouring lanes load neighbouring 16-byte
//   words of a row (coalesced), and each x load serves every row. Each lane keeps
//   MATRICES x ROWS x TOKENS running sums in `sums`; reduce_sums() (<reduce>: reduce_subgroup.wgsl
//   adds within each subgroup with subgroupAdd, then across subgroups in workgroup memory;
//   reduce_workgroup.wgsl is a tree in workgroup memory) leaves each output's total in reduced(o).
//   Nothing here assumes a subgroup size (lavapipe's is 8, NVIDIA's 32).
//   TOKENS is 1 (decode) or 8; 2..7 tokens run with TOKENS = 8, the missing ones re-reading
//   the last token and never stored.
//
// Dispatch: (min(G, groups_x), ceil(G / groups_x), ceil(tokens / TOKENS)) workgroups with G = ceil(rows / ROWS),
// once per matrix part (two dimensions when G exceeds the per-dimension limit).
// Workgroup z takes tokens TOKENS * z .. (a decode step of more than MAX_TOKENS sequences).
// Assumes: cols % 8 == 0 (other widths use gemm_words.wgsl); gate and up split at the same rows.

// #include "lanes.wgsl"       WG, ROWS, TOKENS (1 or MAX_TOKENS here), MATRICES, `sums`, first_row, x_rows, store
// #include <reduce>           Lane, reduce_sums(), reduced(): reduce_subgroup.wgsl or reduce_workgroup.wgsl
// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings x, w, y, up; MATRICES, store_output; w8/up8
// #include "../weights.wgsl"  DTYPE, F32, words_per_chunk

@compute @workgroup_size(WG)
fn main(lane: Lane, @builtin(workgroup_id) wid: vec3<u32>) {
  let row0 = first_row(wid);
  if (row0 == p.rows) {
    return;  // the whole workgroup: control flow stays uniform
  }
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();
  // Rows and tokens past the end re-read the last one; their sums are never stored.
  var base: array<u32, MAX_ROWS>;
  for (var r = 0u; r < ROWS; r++) {
    base[r] = min(row0 + r, p.rows - 1u) * chunks * wpc;
  }
  let t0 = wid.z * TOKENS;
  var xrow = x_rows(t0);
  let up_at = ROWS * TOKENS;  // swiglu: up's sums after gate's
  for (var k = lane.index; k < chunks; k += WG) {
    var xa: array<vec4<f32>, MAX_TOKENS>;
    var xb: array<vec4<f32>, MAX_TOKENS>;
    for (var t = 0u; t < TOKENS; t++) {
      xa[t] = x[xrow[t] + 2u * k];
      xb[t] = x[xrow[t] + 2u * k + 1u];
    }
    for (var r = 0u; r < ROWS; r++) {
      let wv = w8(base[r] + k * wpc);
      var uv: array<vec4<f32>, 2>;
      if (MATRICES == 2u) {
        uv = up8(base[r] + k * wpc);
      }
      for (var t = 0u; t < TOKENS; t++) {
        sums[r * TOKENS + t] += dot(wv[0], xa[t]) + dot(wv[1], xb[t]);
        if (MATRICES == 2u) {
          sums[up_at + r * TOKENS + t] += dot(uv[0], xa[t]) + dot(uv[1], xb[t]);
        }
      }
    }
  }
  reduce_sums(lane);
  store(lane, row0, t0);
}
