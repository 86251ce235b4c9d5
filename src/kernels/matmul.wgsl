// Matrix product for decode and prefill: y[t, r] = sum_c x[t, c] * w[r, c]
// (or y[t, r] += ... when `accumulate` is set: the fused residual add).
// Two entry points: `main`, with TOKENS = 8 (prefill), a register-tiled matrix-matrix kernel
// in which each weight load serves 8 tokens; and `matvec` (decode, one token), at the end.
//
// Layouts
//   x: f32 [tokens, cols] row-major, read as vec4<f32>.
//   w: weight rows [rows, cols] of one GpuMatrix part, HF layout [out_features, in_features],
//      stored as f32, f16 or bf16 (DTYPE), read as vec4<u32>: one vec4<u32> holds 8 f16/bf16
//      values or 4 f32 values.
//   y: f32 [tokens, y_stride] row-major; this part writes columns y_offset .. y_offset + rows
//      (y_stride = rows of the whole matrix, y_offset = part.row0), so the parts of a split
//      matrix fill disjoint column ranges of one output.
//
// Work split
//   A workgroup of 64 invocations is 8 "lane groups" of 8 consecutive invocations. A lane
//   group owns ROWS_PER_GROUP = 4 weight rows and the workgroup's TOKENS tokens. Its 8 lanes
//   walk the columns in chunks of 8: lane l takes chunks l, l + 8, l + 16, ..., so the 8 lanes
//   together read 128 contiguous bytes of a 16-bit row per step. Per chunk a lane loads 4
//   weight vec4s and 2 x vec4s per token and keeps 4 x TOKENS running sums in registers: each
//   weight load serves TOKENS tokens, each x load serves 4 rows. At the end the 8 lanes'
//   partial sums of each output meet in workgroup memory (one barrier) and are added.
//   Why this shape (measured on lavapipe, see bench/kernels.ts): llvmpipe runs a workgroup as
//   8-wide SIMD vectors, one lane per invocation; a vec4 load per lane costs about the same as
//   a scalar one, so wide loads roughly double throughput over u32 loads; 4 independent row
//   streams per lane beat 1 or 2 (more loads in flight) and 8 (register pressure); a
//   workgroup-memory reduction once per workgroup costs no more than subgroupAdd, so the kernel
//   needs no optional feature.
//
// Dispatch: (ceil(rows / 32), ceil(tokens / TOKENS)) workgroups, once per matrix part.
//
// Entry point `matvec` (decode, one token) uses a different split with no cross-lane
// reduction: each invocation owns MATVEC_ROWS = 6 whole rows and walks all their columns,
// 8 at a time (one vec4<u32> weight load per row, two vec4<f32> x loads shared by the 6
// rows). llvmpipe turns every storage load whose address depends on a loop counter into
// per-lane, bounds-checked scalar loads (even when all invocations read the same address, as
// they do for x here: its "uniform" shortcut only covers addresses built from constants and
// uniform-buffer values), so loads are the cost, and this split makes 6 rows share each x
// load. Without the reduction there is no workgroup memory, no barrier and no partial sums
// to store. A workgroup of 8 is one 8-wide SIMD batch; 48 rows per workgroup still gives
// k/v_proj (256 rows) 6 workgroups to spread over llvmpipe's threads.
// Measured (1b shapes, f16, 2 vCPUs, 2026-11-24), micro-benchmark with one matrix re-read
// back to back (partly served from this CPU's large L3, and noisy): 2048x2048 4.8 -> 6.0
// GB/s, 2048x5632 6.9 -> 7.7, 32000x2048 6.8 -> 7.1. In the whole 1b model (2.2 GB per token
// from DRAM) the matvec dispatches of a decode step take ~171 ms, and this kernel with
// swiglu.wgsl's `matvec` took decode from 2.42 to 2.50 tok/s. 4 or 8 rows per invocation
// were slower, in the micro-benchmark and in the model.
// Dispatch: (ceil(rows / 48)) workgroups, once per matrix part.
// Assumes: cols % 8 == 0, so every weight row and x row starts on a 16-byte boundary; other
// widths use matmul_words.wgsl.

struct Params {
  rows: u32,        // rows in this part
  cols: u32,        // in_features
  tokens: u32,
  y_stride: u32,    // out_features of the whole matrix
  y_offset: u32,    // first output column this part writes (part.row0)
  accumulate: u32,  // 1: y += x w^T, 0: y = x w^T
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// DTYPE, F32/F16 and the widening functions come from weights.wgsl, prepended by the wrapper.

const WORKGROUP = 64u;
const LANES = 8u;           // invocations sharing one row
const ROWS_PER_GROUP = 4u;  // rows each lane group computes
const GROUPS = WORKGROUP / LANES;
const ROWS_PER_WORKGROUP = GROUPS * ROWS_PER_GROUP;
// Tokens per workgroup of `main`: 8 for prefill (at most MAX_TOKENS; 1 also works).
override TOKENS: u32 = 1u;
const MAX_TOKENS = 8u;

// Eight consecutive weights starting at vec4-word index i, widened to f32.
fn weights8(i: u32) -> array<vec4<f32>, 2> {
  return widen8(w[i], w[i + select(0u, 1u, DTYPE == F32)]);
}

var<workgroup> partial: array<f32, WORKGROUP * ROWS_PER_GROUP * MAX_TOKENS>;

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
  var acc: array<array<f32, MAX_TOKENS>, ROWS_PER_GROUP>;
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
        let wv = weights8(base[i] + k * wpc);
        for (var j = 0u; j < TOKENS; j++) {
          acc[i][j] += dot(wv[0], xa[j]) + dot(wv[1], xb[j]);
        }
      }
    }
  }

  for (var i = 0u; i < ROWS_PER_GROUP; i++) {
    for (var j = 0u; j < TOKENS; j++) {
      partial[((group * ROWS_PER_GROUP + i) * TOKENS + j) * LANES + lane] = acc[i][j];
    }
  }
  workgroupBarrier();

  for (var o = li; o < ROWS_PER_WORKGROUP * TOKENS; o += WORKGROUP) {
    let row = wid.x * ROWS_PER_WORKGROUP + o / TOKENS;
    let t = t0 + o % TOKENS;
    var sum = 0.0;
    for (var l = 0u; l < LANES; l++) {
      sum += partial[o * LANES + l];
    }
    if (row < p.rows && t < p.tokens) {
      let dst = t * p.y_stride + p.y_offset + row;
      if (p.accumulate != 0u) {
        sum += y[dst];
      }
      y[dst] = sum;
    }
  }
}

const MATVEC_WORKGROUP = 8u;
const MATVEC_ROWS = 6u;

// acc + dot(w, (xa, xb)) as a chain of fused multiply-adds.
fn fma8(w: array<vec4<f32>, 2>, xa: vec4<f32>, xb: vec4<f32>, acc: f32) -> f32 {
  var s = acc;
  s = fma(w[0].x, xa.x, s);
  s = fma(w[0].y, xa.y, s);
  s = fma(w[0].z, xa.z, s);
  s = fma(w[0].w, xa.w, s);
  s = fma(w[1].x, xb.x, s);
  s = fma(w[1].y, xb.y, s);
  s = fma(w[1].z, xb.z, s);
  s = fma(w[1].w, xb.w, s);
  return s;
}

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
  var acc: array<f32, MATVEC_ROWS>;
  for (var k = 0u; k < chunks; k++) {
    let xa = x[2u * k];
    let xb = x[2u * k + 1u];
    for (var i = 0u; i < MATVEC_ROWS; i++) {
      acc[i] = fma8(weights8(base[i] + k * wpc), xa, xb, acc[i]);
    }
  }
  for (var i = 0u; i < MATVEC_ROWS; i++) {
    if (row0 + i < p.rows) {
      let dst = p.y_offset + row0 + i;
      if (p.accumulate != 0u) {
        acc[i] += y[dst];
      }
      y[dst] = acc[i];
    }
  }
}
