// Decode matrix-vector products over llama.cpp's block formats, 1 to 8 tokens, plan
// `matvec=rows` (the lavapipe strategy; ../matmul/qmatvec_rows.wgsl is its q8/q4 twin):
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set: the residual add)
//   swiglu (MATRICES 2): y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c])
// where w[r, c] = the dequantized weight (ggml.wgsl and the format's decode file, <ggml_format>).
//
// Layouts: x f32 [tokens, cols] read as vec4<f32>; w/gate/up one part's buffer read as
// vec4<u32>, its rows one after another (ggml.wgsl, pack.ts); y f32 [tokens, y_stride], this
// part's outputs at columns y_offset ..
//
// Work split: as qmatvec_rows.wgsl, by units (a block, or q5_0's pair) and within them spans of
// SPAN groups of 32 columns (the groups whose code words the format shares: a Q5_K chunk, a
// Q6_K half block; one group elsewhere). Each invocation owns ROWS whole rows (of each matrix)
// and walks their spans in order, once per token (tokens one after another); per unit it loads
// each row's block header once (unit_head: Q4_K's d, dmin and packed scales, one vec4; Q6_K's d
// and int8 scales), which the unit's spans decode from registers. Per span lane l of each subgroup loads the token's inputs
// x[t, 8g + l % 8] of each group g (one vec4), every lane takes all 8 by subgroupBroadcast and
// sums the halves once for all its rows (and places them, PLACE, where the format reads its
// codes in place); then per row the format's span_dot loads the span's code words once,
// decodes them in registers and adds a (q . x) + b sum(x) per half group. No
// cross-lane sums. A token's sums are the same chain of f32 operations whatever the token
// count and whatever TOKENS (1 for one token alone, MATVEC_MAX_TOKENS otherwise), so a batched
// decode step gives each token its alone result.
// Why: on llvmpipe a load at a per-lane address costs per lane and word, a broadcast from a
// fixed lane one shuffle, so x by broadcast leaves the code words as the per-row loads, each
// loaded once (bench/RESULTS.md, "Quantized decode on lavapipe").
//
// Dispatch: (ceil(rows / (WG * ROWS)), ceil(tokens / TOKENS)) workgroups, once per matrix
// part: workgroup row y takes tokens TOKENS * y ...
// Assumes: cols % (32 SPAN) == 0 (whole blocks); gate and up split at the same rows;
// subgroups of at least 8 lanes (table.ts takes matvec_lanes.wgsl where there are none);
// uniform control flow throughout.

enable subgroups;
// #include "../matmul/params.wgsl"    Params (p)
// #include "../matmul/products.wgsl"  the bindings x, w, y, up; MATRICES, store_output
// #include "../matmul/sums.wgsl"      silu
// #include "ggml.wgsl"                XSpan, row_words, half_sums, PLACE
// #include <ggml_format>              SPAN, UNIT_SPANS, PLACED_X, Head, unit_head, span_dot: ggml/q4_k.wgsl, ...

override WG: u32;
override ROWS: u32;    // rows per invocation, <= MAX_ROWS
override TOKENS: u32;  // most tokens per dispatch (1 or MATVEC_MAX_TOKENS)

// MAX_ROWS: declared by the loader from CAPACITY (../table.ts).

// Token t's inputs of span `sp`, loaded once per subgroup (lanes 0..7 each load one vec4 of a
// group, every lane takes all 8 by broadcast), with their half sums.
fn x_span(t: u32, sp: u32, lane: u32) -> XSpan {
  var s: XSpan;
  for (var k = 0u; k < SPAN; k++) {
    let v = x[t * (p.cols / 4u) + 8u * (SPAN * sp + k) + lane % 8u];
    s.xs[k] = array<vec4<f32>, 8>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                                  subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
    s.sums[k] = half_sums(s.xs[k]);
    if (PLACED_X) {
      for (var i = 0u; i < 8u; i++) {
        s.xs[k][i] *= PLACE;
      }
    }
  }
  return s;
}

// The first word of each row of the invocation. Rows past the end re-read the last row, so
// that the loop has no per-row branches.
fn row_starts(row0: u32) -> array<u32, MAX_ROWS> {
  var s: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    s[i] = min(row0 + i, p.rows - 1u) * row_words(p.cols);
  }
  return s;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
  let swiglu = MATRICES == 2u;
  let row0 = gid.x * ROWS;
  let spans = p.cols / (32u * SPAN);
  let units = (spans + UNIT_SPANS - 1u) / UNIT_SPANS;
  let at = row_starts(row0);
  // From the workgroup id, not gid: the token loop holds subgroupBroadcast, so its bounds must be uniform.
  let t0 = wid.y * TOKENS;
  for (var t = t0; t < t0 + TOKENS && t < p.tokens; t++) {
    // Zeroed explicitly (a loop-body `var`'s implicit zero carried sums over on lavapipe).
    var acc = array<f32, MAX_ROWS>();     // the product, or swiglu's gate
    var acc_up = array<f32, MAX_ROWS>();  // swiglu's up
    for (var u = 0u; u < units; u++) {
      var heads: array<Head, MAX_ROWS>;
      var heads_up: array<Head, MAX_ROWS>;
      for (var i = 0u; i < ROWS; i++) {
        heads[i] = unit_head(&w, at[i], u);
        if (swiglu) {
          heads_up[i] = unit_head(&up, at[i], u);
        }
      }
      for (var s = 0u; s < UNIT_SPANS; s++) {
        let sp = u * UNIT_SPANS + s;
        if (sp < spans) {
          let xs = x_span(t, sp, lane);
          for (var i = 0u; i < ROWS; i++) {
            acc[i] += span_dot(&w, at[i], sp, heads[i], xs);
            if (swiglu) {
              acc_up[i] += span_dot(&up, at[i], sp, heads_up[i], xs);
            }
          }
        }
      }
    }
    for (var i = 0u; i < ROWS; i++) {
      if (row0 + i < p.rows) {
        store_output(t * p.y_stride + p.y_offset + row0 + i, acc[i], acc_up[i]);
      }
    }
  }
}
