// Prefill matrix products through workgroup-memory tiles (plan `gemm=tiled`, GPUs):
//   matmul (MATRICES 1): y[t, r] = sum_c x[t, c] * w[r, c]   (y[t, r] += ... when `accumulate` is set: the
//             fused residual add of o_proj and down_proj)
//   swiglu (MATRICES 2): y[t, i] = silu(g) * u,  g = sum_c x[t, c] * gate[i, c],  u = sum_c x[t, c] * up[i, c]
//
// Layouts: x f32 [tokens, cols] read as vec4<f32>; w (gate), up: weight rows of one GpuMatrix
// part, f32/f16/bf16 or q8/q4, read a block at a time through the weight reader the wrapper
// binds to <weight_reader> (gemm_read_dense.wgsl: 8 weights widened; gemm_read_quant.wgsl: a group of 32
// dequantized; a new weight format is a new reader, not a change here); y f32 [tokens,
// y_stride], this part's columns y_offset .. y_offset + rows.
//
// Work split (TM, TN, RM, RN, KT: override constants set from TILES in index.ts)
//   A workgroup computes a TM-token x TN-row output tile with WG = (TM / RM) * (TN / RN)
//   invocations. The columns are walked in steps of KT: all invocations stage the step's x
//   tile [TM, KT] and weight tile [TN, KT] in workgroup memory (weights widened or dequantized
//   to f32 as they are staged, so each is decoded once per workgroup, not once per use), one barrier,
//   then every invocation adds its RM x RN register block of outer products over the KT
//   columns, one more barrier. Invocation (tx, ty) owns rows tx + j * TN / RN and tokens
//   ty + i * TM / RM, so neighbouring invocations read neighbouring workgroup-memory words.
//   Each weight is read from memory once per TM tokens and each x value once per TN rows.
//
//   K split (SPLIT = 1): when the tiles alone cannot fill the GPU, workgroup z of p.splits
//   takes the columns [z, z + 1) * split_chunks * 8 and writes its raw sums, not y, to a
//   partials buffer bound as y: part[((z * M + m) * tokens + t) * rows + r], m = 0 for the
//   product (gate), 1 for up (swiglu: M = 2); gemm_split_reduce.wgsl adds the splits in order
//   and applies the epilogue. Either way every output is the same serial sum over its columns
//   (per split), whatever TM or the number of tokens: a token's result never depends on the
//   other tokens of its chunk.
//
// Dispatch: (ceil(rows / TN), ceil(tokens / TM), splits) workgroups per part.
// Assumes: cols % 8 == 0, KT % 8 == 0; q8/q4: cols % 32 == 0, KT % 32 == 0 (a K range is whole groups).

// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings x, w, y, up; MATRICES, store_output
// #include "sums.wgsl"        silu
// #include <weight_reader>    BLOCK_CHUNKS, WBlock, row_start, weight_block, chunk_of: gemm_read_dense.wgsl or gemm_read_quant.wgsl


override TM: u32;     // tokens per tile
override TN: u32;     // rows per tile
override RM: u32;     // tokens per invocation, <= MAX_R
override RN: u32;     // rows per invocation, <= MAX_R
override KT: u32;     // columns per step, a multiple of 8
override SPLIT: bool; // write raw sums to the partials buffer (bound as y)
override WG: u32 = (TM / RM) * (TN / RN);
// MAX_R: declared by the loader from CAPACITY (../table.ts).

var<workgroup> xs: array<f32, TM * KT>;  // [KT][TM]
var<workgroup> ws: array<f32, MATRICES * TN * KT>;  // [MATRICES][KT][TN]: swiglu's up after gate's

alias Block = array<array<f32, MAX_R>, MAX_R>;

struct Tile {
  t0: u32,       // first token
  r0: u32,       // first row
  k_begin: u32,  // first 8-column chunk of this K range
  k_end: u32,
  tx: u32,
  ty: u32,
}

fn k_begin_of(wid: vec3<u32>) -> u32 {
  return min(wid.z * p.split_chunks, p.cols / 8u);
}

fn k_end_of(wid: vec3<u32>) -> u32 {
  return min(k_begin_of(wid) + p.split_chunks, p.cols / 8u);
}

fn tile_of(wid: vec3<u32>, li: u32) -> Tile {
  return Tile(wid.y * TM, wid.x * TN, k_begin_of(wid), k_end_of(wid), li % (TN / RN), li / (TN / RN));
}

// Stages the x tile of the step starting at chunk k0: token e / (KT / 4), 4 columns.
// Tokens past the end re-read the last one; columns past the K range are zero.
fn stage_x(tile: Tile, k0: u32, li: u32) {
  let quads = KT / 4u;
  for (var e = li; e < TM * quads; e += WG) {
    let token = e / quads;
    let c4 = e % quads;
    var v = vec4<f32>(0.0);
    if (k0 * 2u + c4 < tile.k_end * 2u) {
      v = x[min(tile.t0 + token, p.tokens - 1u) * (p.cols / 4u) + k0 * 2u + c4];
    }
    for (var q = 0u; q < 4u; q++) {
      xs[(c4 * 4u + q) * TM + token] = v[q];
    }
  }
}

// Tile row `row`'s weight row, past-the-end rows re-reading the last.
fn row_of(tile: Tile, row: u32) -> u32 {
  return min(tile.r0 + row, p.rows - 1u);
}

// Stages the weight tiles of the step starting at chunk k0 (w's, and swiglu's up after it), a
// block per element; blocks past the K range stay zero (a zero WBlock reads as zero weights).
fn stage_w(tile: Tile, k0: u32, li: u32) {
  let per_row = KT / (8u * BLOCK_CHUNKS);
  for (var e = li; e < MATRICES * TN * per_row; e += WG) {
    let m = e / (TN * per_row);
    let row = (e / per_row) % TN;
    let j = e % per_row;
    var blk: WBlock;
    if (k0 + j * BLOCK_CHUNKS < tile.k_end) {
      let start = row_start(row_of(tile, row));
      if (MATRICES == 1u || m == 0u) {
        blk = weight_block(&w, start, k0 / BLOCK_CHUNKS + j);
      } else {
        blk = weight_block(&up, start, k0 / BLOCK_CHUNKS + j);
      }
    }
    for (var c = 0u; c < BLOCK_CHUNKS; c++) {
      let v = chunk_of(blk, c);
      for (var q = 0u; q < 8u; q++) {
        ws[(m * KT + (j * BLOCK_CHUNKS + c) * 8u + q) * TN + row] = v[q / 4u][q % 4u];
      }
    }
  }
}

// acc[i][j] += sum over the staged step of x[token i] * w[row j] (matrix m's tile: 0 w, 1 up).
fn add_step(acc: ptr<function, Block>, tile: Tile, m: u32) {
  for (var k = 0u; k < KT; k++) {
    var a: array<f32, MAX_R>;
    for (var i = 0u; i < RM; i++) {
      a[i] = xs[k * TM + tile.ty + i * (TM / RM)];
    }
    for (var j = 0u; j < RN; j++) {
      let b = ws[(m * KT + k) * TN + tile.tx + j * (TN / RN)];
      for (var i = 0u; i < RM; i++) {
        (*acc)[i][j] += a[i] * b;
      }
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let swiglu = MATRICES == 2u;
  let tile = tile_of(wid, li);
  // The K range again from workgroup values only: barriers need uniform loop bounds.
  let k_begin = k_begin_of(wid);
  let k_end = k_end_of(wid);
  var acc: Block;     // the product, or swiglu's gate
  var acc_up: Block;  // swiglu's up
  for (var k0 = k_begin; k0 < k_end; k0 += KT / 8u) {
    stage_x(tile, k0, li);
    stage_w(tile, k0, li);
    workgroupBarrier();
    add_step(&acc, tile, 0u);
    if (swiglu) {
      add_step(&acc_up, tile, 1u);
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < RM; i++) {
    let t = tile.t0 + tile.ty + i * (TM / RM);
    for (var j = 0u; j < RN; j++) {
      let row = tile.r0 + tile.tx + j * (TN / RN);
      if (t < p.tokens && row < p.rows) {
        if (SPLIT) {
          y[((wid.z * MATRICES) * p.tokens + t) * p.rows + row] = acc[i][j];
          if (swiglu) {
            y[((wid.z * MATRICES + 1u) * p.tokens + t) * p.rows + row] = acc_up[i][j];
          }
        } else {
          store_output(t * p.y_stride + p.y_offset + row, acc[i][j], acc_up[i][j]);
        }
      }
    }
  }
}
