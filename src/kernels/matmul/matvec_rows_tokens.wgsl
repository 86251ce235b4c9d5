// Decode matrix-vector products for a batch of up to MAX_TOKENS tokens, plan `matvec=rows`
// (lavapipe): the batched decode steps of continuous batching.
//   `matmul`: y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set)
//   `swiglu`: y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c])
//
// Layouts: as gemm_regtile.wgsl (x f32 [tokens, cols] read as vec4<f32>; w/gate/up one part's
// rows [rows, cols] in DTYPE read as vec4<u32>; y f32 [tokens, y_stride], this part's outputs
// at columns y_offset ..).
//
// Work split: matvec_rows.wgsl's (each invocation owns ROWS whole rows and walks their columns
// 8 at a time, no cross-lane reduction), with every weight chunk loaded once and used for each
// of the p.tokens tokens: a batch of decode rows reads the weights once. Token t's sums are
// added chunk by chunk in column order, exactly as when it is alone (p.tokens = 1): a token's
// result does not depend on how many others share the dispatch, which is what lets a sequence
// decode the same alone and under load. matvec_rows.wgsl adds in the same order (matmul through
// fma8, swiglu as two dots per chunk), so a one-row decode step runs that kernel instead (no
// token loop) and gets these bits: matmul/batch.test.ts checks it for both entry points.
//
// Dispatch: (ceil(rows / (WG * ROWS))) workgroups, once per matrix part; p.tokens <= MAX_TOKENS.
// Assumes: cols % 8 == 0; gate and up split at the same rows.

// Params, the bindings (x, w, y, up) and w8/up8 come from products.wgsl, silu/fma8 from sums.wgsl; DTYPE, F32/F16
// and the widening functions from weights.wgsl; both prepended by the wrapper.

override WG: u32;
override ROWS: u32;  // rows per invocation, <= MAX_ROWS
const MAX_ROWS = 6u;
const MAX_TOKENS = 8u;

@compute @workgroup_size(WG)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.x * ROWS;
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();
  // Rows past the end re-read the last row, so that the loop has no per-row branches.
  var base: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    base[i] = min(row0 + i, p.rows - 1u) * chunks * wpc;
  }
  var acc: array<f32, MAX_ROWS * MAX_TOKENS>; // [token][row]
  var wk: array<array<vec4<f32>, 2>, MAX_ROWS>;
  for (var k = 0u; k < chunks; k++) {
    for (var i = 0u; i < ROWS; i++) {
      wk[i] = w8(base[i] + k * wpc);
    }
    for (var t = 0u; t < p.tokens; t++) {
      let xa = x[2u * (t * chunks + k)];
      let xb = x[2u * (t * chunks + k) + 1u];
      for (var i = 0u; i < ROWS; i++) {
        acc[t * MAX_ROWS + i] = fma8(wk[i], xa, xb, acc[t * MAX_ROWS + i]);
      }
    }
  }
  for (var t = 0u; t < p.tokens; t++) {
    for (var i = 0u; i < ROWS; i++) {
      if (row0 + i < p.rows) {
        let dst = t * p.y_stride + p.y_offset + row0 + i;
        var v = acc[t * MAX_ROWS + i];
        if (p.accumulate != 0u) {
          v += y[dst];
        }
        y[dst] = v;
      }
    }
  }
}

@compute @workgroup_size(WG)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.x * ROWS;
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();
  var base: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    base[i] = min(row0 + i, p.rows - 1u) * chunks * wpc;
  }
  var accGate: array<f32, MAX_ROWS * MAX_TOKENS>; // [token][row]
  var accUp: array<f32, MAX_ROWS * MAX_TOKENS>;
  var gk: array<array<vec4<f32>, 2>, MAX_ROWS>;
  var uk: array<array<vec4<f32>, 2>, MAX_ROWS>;
  for (var k = 0u; k < chunks; k++) {
    for (var i = 0u; i < ROWS; i++) {
      gk[i] = w8(base[i] + k * wpc);
      uk[i] = up8(base[i] + k * wpc);
    }
    for (var t = 0u; t < p.tokens; t++) {
      let xa = x[2u * (t * chunks + k)];
      let xb = x[2u * (t * chunks + k) + 1u];
      for (var i = 0u; i < ROWS; i++) {
        accGate[t * MAX_ROWS + i] += dot(gk[i][0], xa) + dot(gk[i][1], xb);
        accUp[t * MAX_ROWS + i] += dot(uk[i][0], xa) + dot(uk[i][1], xb);
      }
    }
  }
  for (var t = 0u; t < p.tokens; t++) {
    for (var i = 0u; i < ROWS; i++) {
      if (row0 + i < p.rows) {
        y[t * p.y_stride + p.y_offset + row0 + i] = silu(accGate[t * MAX_ROWS + i]) * accUp[t * MAX_ROWS + i];
      }
    }
  }
}
