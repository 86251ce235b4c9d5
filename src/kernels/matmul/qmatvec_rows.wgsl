// Decode matrix-vector products over quantized weights (q8, q4), 1 to 8 tokens, plan
// `matvec=rows` (the lavapipe strategy; matvec_rows.wgsl is its 16-bit twin):
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set: the residual add)
//   swiglu (MATRICES 2): y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c]),  silu(g) = g / (1 + exp(-g))
// where w[r, c] = dequantized weight (quant.wgsl; the formats: src/kernels/quant.ref.ts).
//
// Layouts: x f32 [tokens, cols] read as vec4<f32>; w/gate/up one part's buffer read as
// vec4<u32>: codes plane then scales plane (quant.wgsl); y f32 [tokens, y_stride], this part's
// outputs at columns y_offset ..
//
// Work split: as matvec_rows.wgsl, by groups of 32 columns instead of chunks of 8. Each
// invocation owns ROWS whole rows (of each matrix) and walks their groups in blocks of 8 (256
// columns), in order, once per token (tokens one after another: the weights are read again for
// each). Per block it loads one vec4 of scales per row (8 f16 scales). Per group: lane l of each
// subgroup loads the token's inputs x[t, 8g + l % 8] (one vec4), every lane takes all 8 by
// subgroupBroadcast, sums and scales them once (scaled_x, quant.wgsl) for all its rows; then
// per row one (q4) or two (q8) vec4 loads of codes, decoded in registers (group_dot_scaled).
// No cross-lane sums. A token's sums are the same chain of f32 operations whatever the token
// count and whatever TOKENS (1 for one token alone, MATVEC_MAX_TOKENS otherwise), so a batched
// decode step gives each token its alone result. (Sharing each code load among the tokens, with
// the token loop inside the group loop, made one token 1.4-2x slower: bench/RESULTS.md.)
// Why: on llvmpipe a load at a per-lane address costs a compare, a branch and a scalar load per
// lane and word, a broadcast from a fixed lane one shuffle, so x by broadcast and one scale
// load per 8 groups leave the codes as the only per-row loads, and the decode work per weight
// as the cost (bench/RESULTS.md, "Quantized decode on lavapipe").
//
// Dispatch: (ceil(rows / (WG * ROWS)), ceil(tokens / TOKENS)) workgroups, once per matrix part:
// workgroup row y takes tokens TOKENS * y .. (a decode step of more than MATVEC_MAX_TOKENS
// sequences).
// Assumes: cols % 32 == 0; gate and up split at the same rows; subgroups of
// at least 8 lanes (index.ts takes qmatvec_lanes.wgsl where there are none); uniform control
// flow throughout.

enable subgroups;
// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings x, w, y, up; MATRICES, store_output
// #include "sums.wgsl"        silu
// #include "../quant.wgsl"    QFORMAT and the formats' decoding


override WG: u32;
override ROWS: u32;    // rows per invocation, <= MAX_ROWS
override TOKENS: u32;  // most tokens per dispatch (1 or MATVEC_MAX_TOKENS)

// MAX_ROWS: declared by the loader from CAPACITY (../table.ts).

// Token t's 32 inputs of group g as vec4s, loaded once per subgroup: lanes 0..7 each load one
// vec4 (other lanes load copies that are never broadcast).
// Returned as group_dot_scaled takes them: scaled (scaled_x) and their plain sum, shared by
// every row of the invocation.
struct XGroup {
  xp: array<vec4<f32>, 8>,
  sum: f32,
}

fn x_group(t: u32, g: u32, lane: u32) -> XGroup {
  let v = x[t * (p.cols / 4u) + 8u * g + lane % 8u];
  let xs = array<vec4<f32>, 8>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
                               subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
  return XGroup(scaled_x(xs), group_sum(xs));
}

// Row i's group g against the group's inputs: scale times the codes' dot (a second code word per group under q8).
fn row_group(m: ptr<storage, array<vec4<u32>>, read>, at: u32, g: u32, scale: f32, xg: XGroup) -> f32 {
  let c = at + g * group_vec4s();
  return scale * group_dot_scaled((*m)[c], (*m)[c + group_vec4s() - 1u], xg.xp, xg.sum);
}

// The first vec4 of codes and of scales of each row of the invocation. Rows past the end
// re-read the last row, so that the loop has no per-row branches.
struct RowStarts {
  codes: array<u32, MAX_ROWS>,
  scales: array<u32, MAX_ROWS>,
}

fn row_starts(row0: u32) -> RowStarts {
  var s: RowStarts;
  for (var i = 0u; i < ROWS; i++) {
    let r = min(row0 + i, p.rows - 1u);
    s.codes[i] = codes_at(r, p.cols);
    s.scales[i] = scales_at(r, p.rows, p.cols);
  }
  return s;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
  let swiglu = MATRICES == 2u;
  let row0 = gid.x * ROWS;
  let groups = p.cols / 32u;
  let at = row_starts(row0);
  // From the workgroup id, not gid: the token loop holds subgroupBroadcast, so its bounds must be uniform.
  let t0 = wid.y * TOKENS;
  for (var t = t0; t < t0 + TOKENS && t < p.tokens; t++) {
    // Zeroed explicitly: left to the implicit zero of a `var` in a loop body, the sums carried
    // over from the previous token on lavapipe.
    var acc = array<f32, MAX_ROWS>();     // the product, or swiglu's gate
    var acc_up = array<f32, MAX_ROWS>();  // swiglu's up
    for (var b = 0u; 8u * b < groups; b++) {
      var d: array<vec4<u32>, MAX_ROWS>;
      var d_up: array<vec4<u32>, MAX_ROWS>;
      for (var i = 0u; i < ROWS; i++) {
        d[i] = w[at.scales[i] + b];
        if (swiglu) {
          d_up[i] = up[at.scales[i] + b];
        }
      }
      for (var k = 0u; k < 8u && 8u * b + k < groups; k++) {
        let g = 8u * b + k;
        let xg = x_group(t, g, lane);
        for (var i = 0u; i < ROWS; i++) {
          acc[i] += row_group(&w, at.codes[i], g, scale_of(d[i], k), xg);
          if (swiglu) {
            acc_up[i] += row_group(&up, at.codes[i], g, scale_of(d_up[i], k), xg);
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
