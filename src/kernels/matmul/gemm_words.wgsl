// General-shape matrix product: y[t, r] = sum_c x[t, c] * w[r, c]
// (or y[t, r] += ... when `accumulate` is set: the fused residual add).
// The fallback for matrices whose cols is not a multiple of 8, which the fast kernel
// (gemm_regtile.wgsl and the matvec kernels, vec4 loads) cannot read. Real model shapes never take this path; it is
// here so that any even width works (tests use cols = 66). Simple over fast.
//
// Layouts
//   x: f32 [tokens, cols] row-major, read as vec2<f32> (cols is even, so pairs never straddle rows).
//   w: weight rows [rows, cols] of one GpuMatrix part, HF layout [out_features, in_features],
//      stored as f32, f16 or bf16 (DTYPE), read as u32 words (one f32, or two 16-bit values).
//   y: f32 [tokens, y_stride] row-major; this part writes columns y_offset .. y_offset + rows
//      (y_stride = the whole matrix's rows, y_offset = part.row0).
//
// Work split
//   Workgroup (i, j) computes a block of ROWS weight rows x (WG * TOKENS_PER_INVOCATION)
//   tokens (override constants set from TILES in index.ts). All WG invocations of a workgroup
//   walk the same ROWS weight rows in step, so each weight load has the same address in every
//   invocation: llvmpipe turns such a uniform load into a single scalar load broadcast to all
//   SIMD lanes, and the weight word then serves every token of the workgroup. Invocation l
//   owns tokens l, l + WG, ... and keeps a ROWS x TOKENS_PER_INVOCATION block of sums in
//   registers; each x load serves the ROWS rows. No workgroup memory and no barriers: on a CPU
//   the caches already hold the tiles, and barriers are costly on llvmpipe.
//
// Dispatch: (ceil(rows / ROWS), ceil(tokens / (WG * TOKENS_PER_INVOCATION))) workgroups per part.
// Assumes: cols even.

// #include "params.wgsl"      Params (p)
// #include "../weights.wgsl"  DTYPE, F32, widen2

// Its own bindings of x and w, by smaller words than products.wgsl's.
@group(0) @binding(1) var<storage, read> x: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

override WG: u32;
override ROWS: u32;                   // <= MAX_ROWS
override TOKENS_PER_INVOCATION: u32;  // <= MAX_TOKENS_PER_INVOCATION
// MAX_ROWS, MAX_TOKENS_PER_INVOCATION: declared by the loader from CAPACITY (../table.ts).

// Two consecutive weights at column c (even) of the row whose first word is `row_word`.
fn weights2(row_word: u32, c: u32) -> vec2<f32> {
  if (DTYPE == F32) {
    return vec2<f32>(bitcast<f32>(w[row_word + c]), bitcast<f32>(w[row_word + c + 1u]));
  }
  return widen2(w[row_word + c / 2u]);
}

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let row0 = wid.x * ROWS;
  let words_per_row = select(p.cols / 2u, p.cols, DTYPE == F32);
  let pairs = p.cols / 2u;  // vec2 elements per x row

  // Rows past the end re-read the last row; their sums are never stored.
  var row_word: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    row_word[i] = min(row0 + i, p.rows - 1u) * words_per_row;
  }
  // This invocation's tokens; ones past the end re-read the last token.
  var x_pair: array<u32, MAX_TOKENS_PER_INVOCATION>;
  for (var j = 0u; j < TOKENS_PER_INVOCATION; j++) {
    let t = wid.y * WG * TOKENS_PER_INVOCATION + j * WG + li;
    x_pair[j] = min(t, p.tokens - 1u) * pairs;
  }

  var acc: array<array<vec2<f32>, MAX_TOKENS_PER_INVOCATION>, MAX_ROWS>;
  for (var c = 0u; c < p.cols; c += 2u) {
    var xs: array<vec2<f32>, MAX_TOKENS_PER_INVOCATION>;
    for (var j = 0u; j < TOKENS_PER_INVOCATION; j++) {
      xs[j] = x[x_pair[j] + c / 2u];
    }
    for (var i = 0u; i < ROWS; i++) {
      let wv = weights2(row_word[i], c);
      for (var j = 0u; j < TOKENS_PER_INVOCATION; j++) {
        acc[i][j] += wv * xs[j];
      }
    }
  }

  for (var j = 0u; j < TOKENS_PER_INVOCATION; j++) {
    let t = wid.y * WG * TOKENS_PER_INVOCATION + j * WG + li;
    if (t < p.tokens) {
      for (var i = 0u; i < ROWS; i++) {
        if (row0 + i < p.rows) {
          let o = t * p.y_stride + p.y_offset + row0 + i;
          var sum = acc[i][j].x + acc[i][j].y;
          if (p.accumulate != 0u) {
            sum += y[o];
          }
          y[o] = sum;
        }
      }
    }
  }
}
