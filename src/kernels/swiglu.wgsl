// Fused SwiGLU projection (Mistral's MLP front half), one pass over both weight matrices:
//   y[t, i] = silu(g) * u,  g = sum_c x[t, c] * gate[i, c],  u = sum_c x[t, c] * up[i, c],
//   silu(g) = g / (1 + exp(-g)).
// The kernel is matmul.wgsl with each lane group computing 2 rows of gate_proj and the same
// 2 rows of up_proj (4 weight streams, as in matmul.wgsl), so x is read once for both
// matrices and the [tokens, intermediate] gate and up activations never reach memory.
// Entry point `main` with TOKENS = 8 is the register-tiled prefill kernel; `matvec` (at the
// end) is the decode kernel for one token.
//
// Layouts
//   x: f32 [tokens, cols] row-major, read as vec4<f32>.
//   gate, up: the same rows [rows, cols] of one part of gate_proj and of up_proj (HF layout
//      [intermediate_size, hidden_size]), stored as f32, f16 or bf16 (DTYPE), read as
//      vec4<u32> (8 f16/bf16 values or 4 f32 values).
//   y: f32 [tokens, y_stride] row-major; this part writes columns y_offset .. y_offset + rows.
//
// Work split: 64 invocations = 8 lane groups of 8 lanes; a lane group owns 2 rows (of both
// matrices) and TOKENS tokens; lane l takes 8-column chunks l, l + 8, ...; partial sums meet
// in workgroup memory at the end (see matmul.wgsl for why this shape suits lavapipe).
//
// Dispatch: (ceil(rows / 16), ceil(tokens / TOKENS)) workgroups, once per part.
//
// `matvec` (decode): each invocation owns MATVEC_ROWS = 3 rows of gate and the same 3 rows
// of up (6 weight streams) and walks all columns 8 at a time, each x load shared by 6 weight
// loads; no cross-lane reduction, no workgroup memory (the layout of matmul.wgsl's `matvec`,
// which explains why it suits llvmpipe).
// Workgroups of 16: 48 rows each. Measured (5632x2048 f16 gate+up, 2 vCPUs, 2026-11-24):
// 6.7 -> 9.9 GB/s (partly L3-resident; see matmul.wgsl for the end-to-end effect); 4 rows
// per invocation (8 streams) fell back to 7.0.
// Dispatch: (ceil(rows / 48)) workgroups, once per part.
// Assumes: cols % 8 == 0; gate and up split into parts at the same rows.

struct Params {
  rows: u32,        // rows in this part
  cols: u32,        // in_features
  tokens: u32,
  y_stride: u32,    // out_features of the whole matrix
  y_offset: u32,    // first output column this part writes (part.row0)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> gate: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> up: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Weight storage format; the wrapper sets it, and the compiler folds the branches away.
// DTYPE, F32/F16 and the widening functions come from weights.wgsl, prepended by the wrapper.

const WORKGROUP = 64u;
const LANES = 8u;           // invocations sharing one row
const ROWS_PER_GROUP = 2u;  // rows (of each matrix) each lane group computes
const GROUPS = WORKGROUP / LANES;
const ROWS_PER_WORKGROUP = GROUPS * ROWS_PER_GROUP;
// Tokens per workgroup of `main`: 8 for prefill (at most MAX_TOKENS; 1 also works).
override TOKENS: u32 = 1u;
const MAX_TOKENS = 8u;

// The eight weights of gate (or up) at vec4-word index i. For 16-bit formats the second
// load is never used and the compiler drops it.
fn gate8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(gate[i], gate[i + select(0u, 1u, DTYPE == F32)]);
}

fn up8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(up[i], up[i + select(0u, 1u, DTYPE == F32)]);
}

var<workgroup> partial_gate: array<f32, WORKGROUP * ROWS_PER_GROUP * MAX_TOKENS>;
var<workgroup> partial_up: array<f32, WORKGROUP * ROWS_PER_GROUP * MAX_TOKENS>;

fn silu(g: f32) -> f32 {
  return g / (1.0 + exp(-g));
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let lane = li % LANES;
  let group = li / LANES;
  let row0 = wid.x * ROWS_PER_WORKGROUP + group * ROWS_PER_GROUP;
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();

  // Where each of this group's rows starts, in vec4 words. Rows past the end re-read the last
  // row (harmless) so that the loop has no per-row branches; their sums are discarded below.
  var base: array<u32, ROWS_PER_GROUP>;
  for (var i = 0u; i < ROWS_PER_GROUP; i++) {
    base[i] = min(row0 + i, p.rows - 1u) * chunks * wpc;
  }

  let t0 = wid.y * TOKENS;
  var xrow: array<u32, MAX_TOKENS>;
  for (var j = 0u; j < TOKENS; j++) {
    xrow[j] = min(t0 + j, p.tokens - 1u) * chunks * 2u;
  }
  var acc_gate: array<array<f32, MAX_TOKENS>, ROWS_PER_GROUP>;
  var acc_up: array<array<f32, MAX_TOKENS>, ROWS_PER_GROUP>;
  let steps = (chunks + LANES - 1u) / LANES;
  for (var s = 0u; s < steps; s++) {
    let k = s * LANES + lane;
    if (k < chunks) {
      var xa: array<vec4<f32>, MAX_TOKENS>;
      var xb: array<vec4<f32>, MAX_TOKENS>;
      for (var j = 0u; j < TOKENS; j++) {
        xa[j] = x[xrow[j] + 2u * k];
        xb[j] = x[xrow[j] + 2u * k + 1u];
      }
      for (var i = 0u; i < ROWS_PER_GROUP; i++) {
        let g = gate8(base[i] + k * wpc);
        let u = up8(base[i] + k * wpc);
        for (var j = 0u; j < TOKENS; j++) {
          acc_gate[i][j] += dot(g[0], xa[j]) + dot(g[1], xb[j]);
          acc_up[i][j] += dot(u[0], xa[j]) + dot(u[1], xb[j]);
        }
      }
    }
  }

  for (var i = 0u; i < ROWS_PER_GROUP; i++) {
    for (var j = 0u; j < TOKENS; j++) {
      let slot = ((group * ROWS_PER_GROUP + i) * TOKENS + j) * LANES + lane;
      partial_gate[slot] = acc_gate[i][j];
      partial_up[slot] = acc_up[i][j];
    }
  }
  workgroupBarrier();

  for (var o = li; o < ROWS_PER_WORKGROUP * TOKENS; o += WORKGROUP) {
    let row = wid.x * ROWS_PER_WORKGROUP + o / TOKENS;
    let t = t0 + o % TOKENS;
    var g = 0.0;
    var u = 0.0;
    for (var l = 0u; l < LANES; l++) {
      g += partial_gate[o * LANES + l];
      u += partial_up[o * LANES + l];
    }
    if (row < p.rows && t < p.tokens) {
      y[t * p.y_stride + p.y_offset + row] = silu(g) * u;
    }
  }
}

const MATVEC_WORKGROUP = 16u;
const MATVEC_ROWS = 3u;

@compute @workgroup_size(MATVEC_WORKGROUP)
fn matvec(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.x * MATVEC_ROWS;
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();
  // Rows past the end re-read the last row, so that the loop has no per-row branches.
  var base: array<u32, MATVEC_ROWS>;
  for (var i = 0u; i < MATVEC_ROWS; i++) {
    base[i] = min(row0 + i, p.rows - 1u) * chunks * wpc;
  }
  var acc_gate: array<f32, MATVEC_ROWS>;
  var acc_up: array<f32, MATVEC_ROWS>;
  for (var k = 0u; k < chunks; k++) {
    let xa = x[2u * k];
    let xb = x[2u * k + 1u];
    for (var i = 0u; i < MATVEC_ROWS; i++) {
      let g = gate8(base[i] + k * wpc);
      let u = up8(base[i] + k * wpc);
      acc_gate[i] += dot(g[0], xa) + dot(g[1], xb);
      acc_up[i] += dot(u[0], xa) + dot(u[1], xb);
    }
  }
  for (var i = 0u; i < MATVEC_ROWS; i++) {
    if (row0 + i < p.rows) {
      y[p.y_offset + row0 + i] = silu(acc_gate[i]) * acc_up[i];
    }
  }
}
