// Matrix products over llama.cpp's block formats for GPUs: plans `matvec=subgroup` and
// `matvec=workgroup` (1 to 8 tokens), and 2..8 tokens or batched decode steps under
// `matvec=rows` on an adapter without subgroups of 8 (../matmul/qmatvec_lanes.wgsl is its q8/q4 twin):
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set)
//   swiglu (MATRICES 2): y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c])
// where w[r, c] = the dequantized weight (ggml.wgsl and the format's decode file, <ggml_format>).
//
// Layouts: x f32 [tokens, cols] read as vec4<f32>; w/gate/up one part's buffer read as
// vec4<u32>, its rows one after another (ggml.wgsl, pack.ts); y f32 [tokens, y_stride].
//
// Work split (WG, ROWS, TOKENS, MATRICES: override constants set from TILES in index.ts)
//   As qmatvec_lanes.wgsl: a workgroup of WG lanes owns ROWS rows (of each of MATRICES
//   matrices) and TOKENS tokens (the block wid.z); lane l takes groups of 32 columns l,
//   l + WG, ..., decodes each group of each row into registers once (the reference's weights,
//   group_weights) and uses it for every token. reduce_sums() (<reduce>) adds the lanes' sums.
//   Tokens past the end re-read the last token and are never stored. A token's sums do not
//   depend on the other tokens of its block.
//
// Dispatch: (min(G, groups_x), ceil(G / groups_x), ceil(tokens / TOKENS)) workgroups with
// G = ceil(rows / ROWS), once per matrix part.
// Assumes: cols whole blocks of the format; gate and up split at the same rows.

// #include "../matmul/lanes.wgsl"     WG, ROWS, TOKENS, MATRICES, `sums`, first_row, x_rows, store
// #include <reduce>                   Lane, reduce_sums(), reduced(): reduce_subgroup.wgsl or reduce_workgroup.wgsl
// #include "../matmul/params.wgsl"    Params (p)
// #include "../matmul/products.wgsl"  the bindings x, w, y, up; MATRICES, store_output
// #include "ggml.wgsl"                row_words, group_weights, dot32
// #include <ggml_format>              the format's group_codes: ggml/q4_k.wgsl, ...

// Group g of the input row starting at vec4 word `at`.
fn x_group(at: u32, g: u32) -> array<vec4<f32>, 8> {
  let i = at + 8u * g;
  return array<vec4<f32>, 8>(x[i], x[i + 1u], x[i + 2u], x[i + 3u], x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]);
}

@compute @workgroup_size(WG)
fn main(lane: Lane, @builtin(workgroup_id) wid: vec3<u32>) {
  let row0 = first_row(wid);
  if (row0 == p.rows) {
    return;  // the whole workgroup: control flow stays uniform
  }
  let groups = p.cols / 32u;
  let t0 = wid.z * TOKENS;
  var xrow = x_rows(t0);
  let up_at = ROWS * TOKENS;  // swiglu: up's sums after gate's
  let words = row_words(p.cols);
  for (var g = lane.index; g < groups; g += WG) {
    for (var r = 0u; r < ROWS; r++) {
      let row = min(row0 + r, p.rows - 1u) * words;
      let wv = group_weights(&w, row, g);
      var uv: array<vec4<f32>, 8>;
      if (MATRICES == 2u) {
        uv = group_weights(&up, row, g);
      }
      for (var t = 0u; t < TOKENS; t++) {
        let xs = x_group(xrow[t], g);
        sums[r * TOKENS + t] += dot32(wv, xs);
        if (MATRICES == 2u) {
          sums[up_at + r * TOKENS + t] += dot32(uv, xs);
        }
      }
    }
  }
  reduce_sums(lane);
  store(lane, row0, t0);
}
