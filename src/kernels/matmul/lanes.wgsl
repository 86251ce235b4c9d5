// The frame matvec_lanes.wgsl and qmatvec_lanes.wgsl share, included by both: not a kernel
// itself. The reduction (<reduce>: reduce_subgroup.wgsl or reduce_workgroup.wgsl, the
// wrapper's choice) reads `sums` and OUTPUTS from here.
// A workgroup of WG lanes owns ROWS rows (of each of MATRICES weight matrices: 1 for matmul, 2
// for swiglu) and TOKENS tokens from t0. Each lane keeps MATRICES x ROWS x TOKENS running sums
// in `sums`, [matrix][row][token] (up's after gate's); reduce_sums() totals them over the lanes
// into reduced(o), and store() writes the totals to y.

// #include <reduce>          Lane, reduce_sums(), reduced()
// #include "params.wgsl"     Params (p)
// #include "products.wgsl"   the binding y, MATRICES, store_output
// #include "sums.wgsl"       silu

override WG: u32;        // invocations per workgroup, a power of two
override ROWS: u32;      // rows per workgroup, <= MAX_ROWS
override TOKENS: u32;    // tokens per workgroup, <= MAX_TOKENS
// MAX_ROWS, MAX_TOKENS: declared by the loader from CAPACITY (../table.ts).
// Outputs (partial sums) per workgroup, and the most any pipeline has.
override OUTPUTS: u32 = MATRICES * ROWS * TOKENS;
const MAX_OUTPUTS = 2u * MAX_ROWS * MAX_TOKENS;

var<private> sums: array<f32, MAX_OUTPUTS>;

// The first row of this workgroup, or p.rows when the workgroup is past the end.
fn first_row(wid: vec3<u32>) -> u32 {
  return min((wid.y * p.groups_x + wid.x) * ROWS, p.rows);
}

// The first vec4 of x of each of the workgroup's tokens t0 ..; tokens past the end re-read the
// last one (their sums are never stored).
fn x_rows(t0: u32) -> array<u32, MAX_TOKENS> {
  var xrow: array<u32, MAX_TOKENS>;
  for (var t = 0u; t < TOKENS; t++) {
    xrow[t] = min(t0 + t, p.tokens - 1u) * (p.cols / 4u);
  }
  return xrow;
}

// After reduce_sums(): y[t, row] (+)= the total of output o = (row - row0) * TOKENS + t - t0
// (matmul), or silu(gate's total) * up's total (swiglu, up's outputs after gate's).
// Outputs may outnumber the lanes (a small workgroup of 8 lanes x 32 outputs on lavapipe).
fn store(lane: Lane, row0: u32, t0: u32) {
  for (var o = lane.index; o < ROWS * TOKENS; o += WG) {
    let row = row0 + o / TOKENS;
    let t = t0 + o % TOKENS;
    if (row < p.rows && t < p.tokens) {
      store_output(t * p.y_stride + p.y_offset + row, reduced(o), reduced((MATRICES - 1u) * ROWS * TOKENS + o));
    }
  }
}
