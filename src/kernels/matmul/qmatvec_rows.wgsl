// Decode matrix-vector products over quantized weights (q8, q4), one token, plan `matvec=rows`
// (the lavapipe strategy; matvec_rows.wgsl is its 16-bit twin):
//   `matmul`: y[r] = sum_c x[c] * w[r, c]   (y[r] += ... when `accumulate` is set: the residual add)
//   `swiglu`: y[i] = silu(sum_c x[c] gate[i, c]) * (sum_c x[c] up[i, c]),  silu(g) = g / (1 + exp(-g))
// where w[r, c] = dequantized weight (quant.wgsl, prepended; the formats: src/kernels/quant.ref.ts).
//
// Layouts: x f32 [cols] read as vec4<f32>; w/gate/up one part's buffer read as vec4<u32>:
// codes plane then scales plane (quant.wgsl); y f32, this part's outputs at y_offset ..
//
// Work split: as matvec_rows.wgsl, by groups of 32 columns instead of chunks of 8. Each
// invocation owns ROWS whole rows (of each matrix) and walks their groups: per group, 8 x
// vec4 loads and the group's input sum, shared by every row, then per row one (q4) or two
// (q8) vec4 loads of codes and one of scales, dequantized in registers. No cross-lane work.
//
// Dispatch: (ceil(rows / (WG * ROWS))) workgroups, once per matrix part.
// Assumes: cols % 32 == 0; gate and up split at the same rows.

struct Params {
  rows: u32,        // rows in this part
  cols: u32,        // in_features
  tokens: u32,
  y_stride: u32,    // out_features of the whole matrix
  y_offset: u32,    // first output column this part writes (part.row0)
  accumulate: u32,  // 1: y += x w^T, 0: y = x w^T (matmul only)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> up: array<vec4<u32>>;

override WG: u32;
override ROWS: u32;  // rows per invocation, <= MAX_ROWS
const MAX_ROWS = 6u;

fn silu(g: f32) -> f32 {
  return g / (1.0 + exp(-g));
}

// x[8g .. 8g + 8) as vec4s: the group's 32 inputs.
fn x_group(g: u32) -> array<vec4<f32>, 8> {
  let i = 8u * g;
  return array<vec4<f32>, 8>(x[i], x[i + 1u], x[i + 2u], x[i + 3u], x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]);
}

// Row `row`'s part of group g's product with xs (quant.wgsl's layout), scaled.
fn w_group(row: u32, g: u32, xs: array<vec4<f32>, 8>, xsum: f32) -> f32 {
  let c = codes_at(row, p.cols) + g * group_vec4s();
  let d = scale_of(w[scales_at(row, p.rows, p.cols) + g / 8u], g % 8u);
  return d * group_dot(w[c], w[c + select(0u, 1u, QFORMAT == Q8)], xs, xsum);
}

fn up_group(row: u32, g: u32, xs: array<vec4<f32>, 8>, xsum: f32) -> f32 {
  let c = codes_at(row, p.cols) + g * group_vec4s();
  let d = scale_of(up[scales_at(row, p.rows, p.cols) + g / 8u], g % 8u);
  return d * group_dot(up[c], up[c + select(0u, 1u, QFORMAT == Q8)], xs, xsum);
}

@compute @workgroup_size(WG)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.x * ROWS;
  let groups = p.cols / 32u;
  // Rows past the end re-read the last row, so that the loop has no per-row branches.
  var row: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    row[i] = min(row0 + i, p.rows - 1u);
  }
  var acc: array<f32, MAX_ROWS>;
  for (var g = 0u; g < groups; g++) {
    let xs = x_group(g);
    let xsum = group_sum(xs);
    for (var i = 0u; i < ROWS; i++) {
      acc[i] += w_group(row[i], g, xs, xsum);
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
// epilogue: a deliberate copy of the loop, keep the two in step.
@compute @workgroup_size(WG)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.x * ROWS;
  let groups = p.cols / 32u;
  var row: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    row[i] = min(row0 + i, p.rows - 1u);
  }
  var acc_gate: array<f32, MAX_ROWS>;
  var acc_up: array<f32, MAX_ROWS>;
  for (var g = 0u; g < groups; g++) {
    let xs = x_group(g);
    let xsum = group_sum(xs);
    for (var i = 0u; i < ROWS; i++) {
      acc_gate[i] += w_group(row[i], g, xs, xsum);
      acc_up[i] += up_group(row[i], g, xs, xsum);
    }
  }
  for (var i = 0u; i < ROWS; i++) {
    if (row0 + i < p.rows) {
      y[p.y_offset + row0 + i] = silu(acc_gate[i]) * acc_up[i];
    }
  }
}
