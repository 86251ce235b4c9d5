// Decode matrix-vector products, one token, plan `matvec=rows` (the lavapipe strategy):
//   `matmul`: y[r] = sum_c x[c] * w[r, c]   (y[r] += ... when `accumulate` is set: the residual add)
//   `swiglu`: y[i] = silu(sum_c x[c] gate[i, c]) * (sum_c x[c] up[i, c]),  silu(g) = g / (1 + exp(-g))
//
// Layouts: as gemm_regtile.wgsl (x f32 [cols] read as vec4<f32>; w/gate/up one part's rows
// [rows, cols] in DTYPE read as vec4<u32>; y f32, this part's outputs at y_offset ..).
//
// Work split: no cross-lane reduction. Each invocation owns ROWS whole rows (of each matrix)
// and walks all their columns 8 at a time: one vec4<u32> weight load per row, two vec4<f32>
// x loads shared by every row. No workgroup memory, no barrier, no partial sums to store.
// Why this suits llvmpipe (one SIMD lane per invocation, every loop-indexed load a per-lane
// scalar load, so the cost is loads and sharing x across rows saves them), and what was
// measured and tried: bench/RESULTS.md, "Kernel tuning". WG and ROWS are override constants
// set from TILES in index.ts (matmul: 8 x 6 rows = 48 rows per workgroup, so k/v_proj's 256
// rows still give llvmpipe's threads 6 workgroups; swiglu: 16 x 3 rows, 6 weight streams).
// On a GPU this split is wrong (neighbouring lanes read different rows: no coalescing): see
// matvec_lanes.wgsl.
//
// Dispatch: (ceil(rows / (WG * ROWS))) workgroups, once per matrix part.
// Assumes: cols % 8 == 0 (other widths use gemm_words.wgsl); gate and up split at the same rows.

// Params, the bindings (x, w, y, up) and w8/up8 come from products.wgsl, silu/fma8 from sums.wgsl; DTYPE, F32/F16
// and the widening functions from weights.wgsl; both prepended by the wrapper.

override WG: u32;
override ROWS: u32;  // rows per invocation, <= MAX_ROWS
const MAX_ROWS = 6u;

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
  var acc: array<f32, MAX_ROWS>;
  for (var k = 0u; k < chunks; k++) {
    let xa = x[2u * k];
    let xb = x[2u * k + 1u];
    for (var i = 0u; i < ROWS; i++) {
      acc[i] = fma8(w8(base[i] + k * wpc), xa, xb, acc[i]);
    }
  }
  for (var i = 0u; i < ROWS; i++) {
    if (row0 + i < p.rows) {
      let dst = p.y_offset + row0 + i;
      if (p.accumulate != 0u) {
        acc[i] += y[dst];
      }
      y[dst] = acc[i];
    }
  }
}

// `matmul` with a second weight stream per row (up beside gate) and the silu product as its
// epilogue: a deliberate copy of the loop, keep the two in step. Its sums are added as in
// matvec_rows_tokens.wgsl's `swiglu` (keep those in step too): a one-row decode step takes
// this kernel and must get that kernel's bits (matmul/batch.test.ts).
@compute @workgroup_size(WG)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.x * ROWS;
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();
  var base: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    base[i] = min(row0 + i, p.rows - 1u) * chunks * wpc;
  }
  var acc_gate: array<f32, MAX_ROWS>;
  var acc_up: array<f32, MAX_ROWS>;
  for (var k = 0u; k < chunks; k++) {
    let xa = x[2u * k];
    let xb = x[2u * k + 1u];
    for (var i = 0u; i < ROWS; i++) {
      let g = w8(base[i] + k * wpc);
      let u = up8(base[i] + k * wpc);
      acc_gate[i] += dot(g[0], xa) + dot(g[1], xb);
      acc_up[i] += dot(u[0], xa) + dot(u[1], xb);
    }
  }
  for (var i = 0u; i < ROWS; i++) {
    if (row0 + i < p.rows) {
      y[p.y_offset + row0 + i] = silu(acc_gate[i]) * acc_up[i];
    }
  }
}
