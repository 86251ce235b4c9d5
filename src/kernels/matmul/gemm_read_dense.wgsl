// The weight reader of the prefill kernels (gemm_regtile, gemm_broadcast, gemm_tiled) for
// f32/f16/bf16 weights (DTYPE, weights.wgsl): not a kernel itself. The kernels include their
// reader as `<weight_reader>`, which the wrapper binds to this file or to gemm_read_quant.wgsl
// (q8/q4 weights), so each kernel's loop is one source for every format.
//
// The interface both readers give (the kernel binds `p`, `w` and `up`; p.rows, p.cols are the part's):
//   BLOCK_CHUNKS       8-column chunks per block: the unit a row is loaded in (here 1 chunk);
//   WBlock             one row's block as loaded (here 8 weights already widened to f32);
//   row_start(row)     where row `row` starts, as weight_block takes it (computed once per row);
//   weight_block(m, start, b)  block b (columns 8 * BLOCK_CHUNKS * b ..) of the row at `start`
//                      of weights m (&w, or SwiGLU's &up);
//   chunk_of(blk, c)   chunk c (< BLOCK_CHUNKS) of a block: 8 weights as f32, in column order.
// A weight as chunk_of returns it is exact (a widened f16/bf16/f32), so a kernel's summation
// order alone decides its rounding.

// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings w, up
// #include "../weights.wgsl"  DTYPE, F32, words_per_chunk, widen8

const BLOCK_CHUNKS = 1u;
alias WBlock = array<vec4<f32>, 2>;

// The row's first vec4 word (the loops add a word offset per block: no multiply in them).
fn row_start(row: u32) -> u32 {
  return row * (p.cols / 8u) * words_per_chunk();
}

fn weight_block(m: ptr<storage, array<vec4<u32>>, read>, start: u32, b: u32) -> WBlock {
  let i = start + b * words_per_chunk();
  return widen8((*m)[i], (*m)[i + select(0u, 1u, DTYPE == F32)]);
}

fn chunk_of(blk: WBlock, c: u32) -> array<vec4<f32>, 2> {
  return blk;
}
