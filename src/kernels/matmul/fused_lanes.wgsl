// Fused decode matvecs for GPUs, a decode step's tokens in blocks of TOKENS (1 or 8), plans `matvec=subgroup|workgroup` with
// `fuse=qkv` or `fuse=norm+qkv` (the lanes split of matvec_lanes.wgsl, several products per dispatch):
//   qkv (MATRICES 1):    q = h q_proj^T,  k = h k_proj^T,  v = h v_proj^T            in one dispatch
//   swiglu (MATRICES 2): y = silu(h gate_proj^T) * (h up_proj^T)                    (always with NORM)
// where h = x without NORM, and with NORM h = rms_norm(x), never stored:
//   rms_norm(x)[t, c] = x[t, c] * norm[c] / rms[t],  rms[t] = sqrt(mean_c(x[t, c]^2) + eps)
// Because 1/rms[t] is one number per token, sum_c h[t, c] w[r, c] = (sum_c x[t, c] norm[c] w[r, c]) / rms[t]:
// each workgroup adds x[t, c]^2 from the x values it loads anyway into TOKENS more running sums,
// reduced with the products, and scales its outputs by 1/rms[t] at the end. One pass, no h buffer.
//
// Layouts: x f32 [tokens, cols] read as vec4<f32>; norm f32 [cols]; w0/w1/w2 one part each, in
// DTYPE [rows_m, cols] read as vec4<u32> (16 bytes = 8 f16/bf16 or 4 f32 values); y0/y1/y2 f32
// [tokens, rows_m]. Bindings (fused_products.wgsl): 0 Params, 1 x, 2 norm, 3 w0 (q_proj | gate_proj), 4 y0 (q | y),
// 5 w1 (k_proj | up_proj), 6 y1 (k), 7 w2 (v_proj), 8 y2 (v). swiglu binds gate_proj again at 7 and a scratch buffer, never written, at 6 and 8. `norm` is
// bound in `qkv` without NORM too (the layer's norm weight, never read there): one kernel then
// serves both plans.
//
// Work split (WG, ROWS, TOKENS, MATRICES, NORM: override constants from TILES in index.ts):
// as matvec_lanes.wgsl: a workgroup of WG lanes owns ROWS rows (of MATRICES matrices: 1 for qkv,
// 2 for swiglu) and TOKENS tokens; lane l takes the 8-column chunks l, l + WG, ... (coalesced),
// keeps MATRICES x ROWS x TOKENS sums (+ TOKENS sums of squares with NORM), and reduce_sums()
// (<reduce>: reduce_subgroup.wgsl or reduce_workgroup.wgsl) totals them. In `qkv` the
// workgroup's index picks the matrix: groups [0, group1) q_proj, [group1, group2) k_proj, then
// v_proj; the choice is uniform over the workgroup.
//
// Dispatch: (min(G, groups_x), ceil(G / groups_x), ceil(tokens / TOKENS)) workgroups,
// G = sum_m ceil(rows_m / ROWS) (qkv) or ceil(rows0 / ROWS) (swiglu); workgroup z takes tokens
// TOKENS * z .. (a decode step of more than MAX_TOKENS sequences).
// Assumes: cols % 8 == 0; matrices in one part each (the wrapper falls back to separate
// dispatches otherwise).

// #include "fused_products.wgsl"  Params (p), the bindings, w0_8/w1_8/w2_8/qkv8
// #include "sums.wgsl"            silu
// #include "../weights.wgsl"      words_per_chunk
// #include <reduce>               Lane, reduce_sums(), reduced(): reduce_subgroup.wgsl or reduce_workgroup.wgsl

override WG: u32;        // invocations per workgroup, a power of two
override ROWS: u32;      // rows per workgroup (of each matrix), <= MAX_ROWS
override TOKENS: u32;    // 1 or MAX_TOKENS
override NORM: bool;     // fold rms_norm(x) in
// MAX_ROWS, MAX_TOKENS: declared by the loader from CAPACITY (../table.ts).
// Sums per lane: products first, then (NORM) each token's sum of squares.
override PRODUCTS: u32 = MATRICES * ROWS * TOKENS;
override OUTPUTS: u32 = PRODUCTS + select(0u, TOKENS, NORM);
const MAX_OUTPUTS = (2u * MAX_ROWS + 1u) * MAX_TOKENS;

var<private> sums: array<f32, MAX_OUTPUTS>;

// The 8 values of chunk k of each token (rows past p.tokens re-read the last token), times
// norm[c] with NORM, whose squares (of x itself) go to the sums after the products.
struct Chunk {
  a: array<vec4<f32>, MAX_TOKENS>,
  b: array<vec4<f32>, MAX_TOKENS>,
}

fn load_x(k: u32, chunks: u32, t0: u32) -> Chunk {
  var c: Chunk;
  var na = vec4<f32>(1.0);
  var nb = vec4<f32>(1.0);
  if (NORM) {
    na = norm[2u * k];
    nb = norm[2u * k + 1u];
  }
  for (var t = 0u; t < TOKENS; t++) {
    let at = min(t0 + t, p.tokens - 1u) * chunks * 2u + 2u * k;
    let xa = x[at];
    let xb = x[at + 1u];
    if (NORM) {
      sums[PRODUCTS + t] += dot(xa, xa) + dot(xb, xb);
    }
    c.a[t] = xa * na;
    c.b[t] = xb * nb;
  }
  return c;
}

// 1 / rms[t] after reduce_sums(), or 1 without NORM.
fn inv_rms(t: u32) -> f32 {
  if (NORM) {
    return 1.0 / sqrt(reduced(PRODUCTS + t) / f32(p.cols) + p.eps);
  }
  return 1.0;
}

@compute @workgroup_size(WG)
fn main(lane: Lane, @builtin(workgroup_id) wid: vec3<u32>) {
  let swiglu = MATRICES == 2u;
  let group = wid.y * p.groups_x + wid.x;
  let mat = matrix_of(group);
  let row0 = (group - mat.first) * ROWS;
  if (row0 >= mat.rows) {
    return;  // past the end of the last matrix: the whole workgroup, control flow stays uniform
  }
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();
  let t0 = wid.z * TOKENS;
  var base: array<u32, MAX_ROWS>;
  for (var r = 0u; r < ROWS; r++) {
    base[r] = min(row0 + r, mat.rows - 1u) * chunks * wpc;
  }
  let up_at = ROWS * TOKENS;  // swiglu: up's sums after gate's
  for (var k = lane.index; k < chunks; k += WG) {
    let c = load_x(k, chunks, t0);
    for (var r = 0u; r < ROWS; r++) {
      let wv = qkv8(mat.m, base[r] + k * wpc);
      var uv: array<vec4<f32>, 2>;
      if (swiglu) {
        uv = w1_8(base[r] + k * wpc);
      }
      for (var t = 0u; t < TOKENS; t++) {
        sums[r * TOKENS + t] += dot(wv[0], c.a[t]) + dot(wv[1], c.b[t]);
        if (swiglu) {
          sums[up_at + r * TOKENS + t] += dot(uv[0], c.a[t]) + dot(uv[1], c.b[t]);
        }
      }
    }
  }
  reduce_sums(lane);
  if (lane.index < ROWS * TOKENS) {
    let row = row0 + lane.index / TOKENS;
    let t = t0 + lane.index % TOKENS;
    if (row < mat.rows && t < p.tokens) {
      let s = inv_rms(lane.index % TOKENS);
      let v = reduced(lane.index) * s;
      let dst = t * mat.rows + row;
      if (swiglu) {
        y0[dst] = silu(v) * (reduced(up_at + lane.index) * s);
      } else {
        store_qkv(mat.m, dst, v);
      }
    }
  }
}
