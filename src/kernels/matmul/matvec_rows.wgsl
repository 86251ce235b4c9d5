// Decode matrix-vector products, 1 to MAX_TOKENS tokens, plan `matvec=rows` (the lavapipe
// strategy): one token alone, and the batched decode steps of continuous batching:
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set: the residual add)
//   swiglu (MATRICES 2): y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c]),  silu(g) = g / (1 + exp(-g))
//
// Layouts: as gemm_regtile.wgsl (x f32 [tokens, cols] read as vec4<f32>; w/gate/up one part's
// rows [rows, cols] in DTYPE read as vec4<u32>; y f32 [tokens, y_stride], this part's outputs
// at columns y_offset ..).
//
// Work split: no cross-lane reduction. Each invocation owns ROWS whole rows (of each matrix)
// and walks all their columns 8 at a time: per chunk it loads the chunk of x of each of its
// p.tokens tokens, then one weight chunk per row, used for every token. No workgroup memory, no
// barrier, no partial sums to store. A batch of decode rows thus reads the weights once, and
// token t's sums are added chunk by chunk in column order (matmul through fma8, swiglu as two
// dots per chunk) exactly as when it is alone: a token's result does not depend on how many
// others share the dispatch, which is what lets a sequence decode the same alone and under
// load (matmul/batch.test.ts). TOKENS is 1 for one token alone and MAX_TOKENS for a batched
// step, and picks the order of the two inner loops (a constant: the other branch compiles
// away): one token loads its x chunk and walks the rows; a batched step stages the rows'
// weight chunks, then walks the tokens. Either order alone cost the other case up to 15-20% on
// lavapipe (bench/RESULTS.md, "Kernel clean-up"); the chain of operations per token is the same.
// Why this suits llvmpipe (one SIMD lane per invocation, every loop-indexed load a per-lane
// scalar load, so the cost is loads and sharing x across rows saves them), and what was
// measured and tried: bench/RESULTS.md, "Kernel tuning". WG and ROWS are override constants
// set from TILES in index.ts (matmul: 8 x 6 rows = 48 rows per workgroup, so k/v_proj's 256
// rows still give llvmpipe's threads 6 workgroups; swiglu: 16 x 3 rows, 6 weight streams).
// On a GPU this split is wrong (neighbouring lanes read different rows: no coalescing): see
// matvec_lanes.wgsl.
//
// Dispatch: (ceil(rows / (WG * ROWS)), ceil(tokens / TOKENS)) workgroups, once per matrix part:
// workgroup row y takes tokens TOKENS * y .. (a decode step of more than MAX_TOKENS sequences
// reads the weights once per block of them; each token's chain stays the same).
// Assumes: cols % 8 == 0 (other widths use gemm_words.wgsl); gate and up split at the same rows.

// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings x, w, y, up; MATRICES, store_output; w8/up8
// #include "sums.wgsl"        silu, add8
// #include "../weights.wgsl"  DTYPE, F32, words_per_chunk

override WG: u32;
override ROWS: u32;    // rows per invocation, <= MAX_ROWS
override TOKENS: u32;  // most tokens per dispatch: 1 or MAX_TOKENS
// MAX_ROWS, MAX_TOKENS: declared by the loader from CAPACITY (../table.ts).

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let swiglu = MATRICES == 2u;
  let row0 = gid.x * ROWS;
  let chunks = p.cols / 8u;
  let wpc = words_per_chunk();
  let t0 = gid.y * TOKENS;
  let tokens = min(p.tokens - t0, TOKENS);
  let x0 = 2u * t0 * chunks; // token t0's first vec4 of x
  // Rows past the end re-read the last row, so that the loop has no per-row branches.
  var base: array<u32, MAX_ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    base[i] = min(row0 + i, p.rows - 1u) * chunks * wpc;
  }
  var acc: array<f32, MAX_ROWS * MAX_TOKENS>;     // [token][row]: the product, or swiglu's gate
  var acc_up: array<f32, MAX_ROWS * MAX_TOKENS>;  // swiglu's up
  for (var k = 0u; k < chunks; k++) {
    if (TOKENS == 1u) {
      let xa = x[x0 + 2u * k];
      let xb = x[x0 + 2u * k + 1u];
      for (var i = 0u; i < ROWS; i++) {
        acc[i] = add8(w8(base[i] + k * wpc), xa, xb, acc[i], !swiglu);
        if (swiglu) {
          acc_up[i] = add8(up8(base[i] + k * wpc), xa, xb, acc_up[i], false);
        }
      }
    } else {
      var wk: array<array<vec4<f32>, 2>, MAX_ROWS>;
      var uk: array<array<vec4<f32>, 2>, MAX_ROWS>;
      for (var i = 0u; i < ROWS; i++) {
        wk[i] = w8(base[i] + k * wpc);
        if (swiglu) {
          uk[i] = up8(base[i] + k * wpc);
        }
      }
      for (var t = 0u; t < tokens; t++) {
        let xa = x[x0 + 2u * (t * chunks + k)];
        let xb = x[x0 + 2u * (t * chunks + k) + 1u];
        for (var i = 0u; i < ROWS; i++) {
          acc[t * MAX_ROWS + i] = add8(wk[i], xa, xb, acc[t * MAX_ROWS + i], !swiglu);
          if (swiglu) {
            acc_up[t * MAX_ROWS + i] = add8(uk[i], xa, xb, acc_up[t * MAX_ROWS + i], false);
          }
        }
      }
    }
  }
  for (var t = 0u; t < tokens; t++) {
    for (var i = 0u; i < ROWS; i++) {
      if (row0 + i < p.rows) {
        store_output((t0 + t) * p.y_stride + p.y_offset + row0 + i, acc[t * MAX_ROWS + i], acc_up[t * MAX_ROWS + i]);
      }
    }
  }
}
