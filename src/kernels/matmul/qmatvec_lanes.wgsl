// Matrix products over quantized weights (q8, q4) for GPUs, and for every plan's prefill:
// plans `matvec=subgroup` and `matvec=workgroup` (1 to 8 tokens), and more than 8 tokens (or
// 2..8 under `matvec=rows`) in blocks of TOKENS tokens:
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set)
//   swiglu (MATRICES 2): y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c])
// where w[r, c] = dequantized weight (quant.wgsl; the formats: src/kernels/quant.ref.ts).
//
// Layouts: x f32 [tokens, cols] read as vec4<f32>; w/gate/up one part's buffer read as
// vec4<u32>: codes plane then scales plane (quant.wgsl); y f32 [tokens, y_stride], this part's
// outputs at columns y_offset ..
//
// Work split (WG, ROWS, TOKENS, MATRICES: override constants set from TILES in index.ts)
//   As matvec_lanes.wgsl, by groups of 32 columns: a workgroup of WG lanes owns ROWS rows (of
//   each of MATRICES matrices) and TOKENS tokens (the block wid.z); lane l takes groups l,
//   l + WG, ..., so neighbouring lanes load neighbouring 16-byte words of codes (q4: one word
//   is one group). A lane dequantizes a group of a row into registers once and uses it for
//   every token. reduce_sums() (<reduce>: reduce_subgroup.wgsl or reduce_workgroup.wgsl) adds
//   the lanes' sums. Tokens past the end re-read the last token and are never stored.
//
// Dispatch: (min(G, groups_x), ceil(G / groups_x), ceil(tokens / TOKENS)) workgroups with
// G = ceil(rows / ROWS), once per matrix part.
// Assumes: cols % 32 == 0; gate and up split at the same rows.

// #include "lanes.wgsl"       WG, ROWS, TOKENS, MATRICES, `sums`, first_row, x_rows, store
// #include <reduce>           Lane, reduce_sums(), reduced(): reduce_subgroup.wgsl or reduce_workgroup.wgsl
// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings x, w, y, up; MATRICES, store_output
// #include "../quant.wgsl"    QFORMAT and the formats' decoding

// Group g of the input row starting at vec4 word `at`.
fn x_group(at: u32, g: u32) -> array<vec4<f32>, 8> {
  let i = at + 8u * g;
  return array<vec4<f32>, 8>(x[i], x[i + 1u], x[i + 2u], x[i + 3u], x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]);
}

// Group g of row `row` of weights m (w, or swiglu's up), dequantized.
fn weight_group(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> array<vec4<f32>, 8> {
  let c = codes_at(row, p.cols) + g * group_vec4s();
  let d = scale_of((*m)[scales_at(row, p.rows, p.cols) + g / 8u], g % 8u);
  return group_weights((*m)[c], (*m)[c + select(0u, 1u, QFORMAT == Q8)], d);
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
  for (var g = lane.index; g < groups; g += WG) {
    for (var r = 0u; r < ROWS; r++) {
      let row = min(row0 + r, p.rows - 1u);
      let wv = weight_group(&w, row, g);
      var uv: array<vec4<f32>, 8>;
      if (MATRICES == 2u) {
        uv = weight_group(&up, row, g);
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
