// The weight reader of the prefill kernels (gemm_regtile, gemm_broadcast, gemm_tiled) for
// llama.cpp's block formats (the format's decode file bound to <ggml_format>), bound to their
// `<weight_reader>`: not a kernel itself. It gives the interface of
// ../matmul/gemm_read_dense.wgsl (see there), so the kernels' loops are unchanged:
//   BLOCK_CHUNKS = 4: a block is one group of 32 weights of a row, loaded and dequantized at
//   once (group_weights: the reference's f32 weights bit for bit), then handed out 8 at a time.
// A kernel so sums the reference's products in its strategy's order, which per output never
// depends on the token count (gemm_read_quant.wgsl says which order each strategy takes).
// Assumes cols are whole blocks of the format (so a multiple of 32: a group never straddles a
// K range or a row).

// #include "../matmul/params.wgsl"    Params (p)
// #include "../matmul/products.wgsl"  the bindings w, up
// #include "ggml.wgsl"                row_words, group_weights
// #include <ggml_format>              the format's group_codes: ggml/q4_k.wgsl, ...

const BLOCK_CHUNKS = 4u;
alias WBlock = array<vec4<f32>, 8>;

// The row's first u32 word.
fn row_start(row: u32) -> u32 {
  return row * row_words(p.cols);
}

fn weight_block(m: ptr<storage, array<vec4<u32>>, read>, start: u32, b: u32) -> WBlock {
  return group_weights(m, start, b);
}

fn chunk_of(blk: WBlock, c: u32) -> array<vec4<f32>, 2> {
  return array<vec4<f32>, 2>(blk[2u * c], blk[2u * c + 1u]);
}
