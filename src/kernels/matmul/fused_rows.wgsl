// Fused decode matvecs, one token, plan `matvec=rows` with `fuse=qkv` or `fuse=norm+qkv`
// (the split of matvec_rows.wgsl, several products per dispatch):
//   qkv (MATRICES 1):    q = h q_proj^T,  k = h k_proj^T,  v = h v_proj^T            in one dispatch
//   swiglu (MATRICES 2): y = silu(h gate_proj^T) * (h up_proj^T)                    (always with NORM)
// where h = x without NORM, and with NORM h = rms_norm(x), never stored:
//   rms_norm(x)[c] = x[c] * norm[c] / rms,  rms = sqrt(mean_c(x[c]^2) + eps)
// so sum_c h[c] w[r, c] = (sum_c x[c] norm[c] w[r, c]) / rms. Each invocation walks all of x
// for its rows anyway, so it sums x[c]^2 itself beside its products (no reduction needed) and
// scales its outputs by 1/rms at the end.
//
// Layouts and bindings (fused_products.wgsl): as fused_lanes.wgsl (0 Params, 1 x, 2 norm, 3 w0 (q_proj | gate_proj),
// 4 y0 (q | y), 5 w1 (k_proj | up_proj), 6 y1 (k), 7 w2 (v_proj), 8 y2 (v); swiglu binds gate_proj again at 7 and a scratch buffer, never written, at 6 and 8;
// `norm` is bound in `qkv` without NORM too, never read there).
//
// Work split (WG, ROWS, NORM: override constants from TILES in index.ts): as matvec_rows.wgsl,
// each invocation owns ROWS whole rows (of each matrix) and walks their columns 8 at a time;
// for qkv the workgroup's index picks the matrix (matrix_of): groups [0, group1) q_proj, [group1, group2)
// k_proj, then v_proj, so a workgroup never straddles two matrices.
//
// Dispatch: (min(G, groups_x), ceil(G / groups_x)) workgroups, G = sum_m ceil(rows_m / (WG * ROWS))
// (qkv) or ceil(rows0 / (WG * ROWS)) (swiglu).
// Assumes: cols % 8 == 0; one token; matrices in one part each (the wrapper falls back to
// separate dispatches otherwise).

// #include "fused_products.wgsl"  Params (p), the bindings, w0_8/w1_8/w2_8/qkv8
// #include "sums.wgsl"            silu, add8
// #include "../weights.wgsl"      words_per_chunk

override WG: u32;
override ROWS: u32;  // rows per invocation, <= MAX_ROWS
override NORM: bool; // fold rms_norm(x) in
// MAX_ROWS: declared by the loader from CAPACITY (../table.ts).

// Chunk k of x (times norm with NORM), its squares added to `ss` (x itself, NORM only).
struct Chunk {
  a: vec4<f32>,
  b: vec4<f32>,
}

fn load_x(k: u32, ss: ptr<function, f32>) -> Chunk {
  let xa = x[2u * k];
  let xb = x[2u * k + 1u];
  if (NORM) {
    *ss += dot(xa, xa) + dot(xb, xb);
    return Chunk(xa * norm[2u * k], xb * norm[2u * k + 1u]);
  }
  return Chunk(xa, xb);
}

fn inv_rms(ss: f32) -> f32 {
  if (NORM) {
    return 1.0 / sqrt(ss / f32(p.cols) + p.eps);
  }
  return 1.0;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let swiglu = MATRICES == 2u;
  let group = wid.y * p.groups_x + wid.x;
  let mat = matrix_of(group);
  let row0 = ((group - mat.first) * WG + li) * ROWS;
  if (row0 >= mat.rows) {
    return;  // no barriers here: an invocation past the end may leave alone
  }
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();
  // Rows past the end re-read the last row, so that the loop has no per-row branches.
  var base: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    base[i] = min(row0 + i, mat.rows - 1u) * chunks * wpc;
  }
  // matvec_rows.wgsl's chains (add8): q/k/v_proj's as its matmul, gate/up_proj's as its SwiGLU.
  var acc: array<f32, MAX_ROWS>;     // q, k or v_proj, or swiglu's gate
  var acc_up: array<f32, MAX_ROWS>;  // swiglu's up
  var ss = 0.0;
  for (var k = 0u; k < chunks; k++) {
    let c = load_x(k, &ss);
    for (var i = 0u; i < ROWS; i++) {
      acc[i] = add8(qkv8(mat.m, base[i] + k * wpc), c.a, c.b, acc[i], !swiglu);
      if (swiglu) {
        acc_up[i] = add8(w1_8(base[i] + k * wpc), c.a, c.b, acc_up[i], false);
      }
    }
  }
  let s = inv_rms(ss);
  for (var i = 0u; i < ROWS; i++) {
    let row = row0 + i;
    if (row < mat.rows) {
      if (swiglu) {
        y0[row] = silu(acc[i] * s) * (acc_up[i] * s);
      } else {
        store_qkv(mat.m, row, acc[i] * s);
      }
    }
  }
}
