// The weight reader of the prefill kernels (gemm_regtile, gemm_broadcast, gemm_tiled) for q8/q4
// weights (QFORMAT, ../quant.wgsl), bound to their `<weight_reader>`: not a kernel itself. It
// gives the interface of gemm_read_dense.wgsl (see there), so the kernels' loops are unchanged:
//   BLOCK_CHUNKS = 4: a block is one group of 32 weights (its codes and its f16 scale), loaded
//   once and dequantized chunk by chunk, 8 weights at a time, as the kernel's loop reaches them.
// chunk_of returns c * d (q8) or (c - 8) * d (q4) in f32: exact (a code of at most 8 bits times
// an f16 scale), the very weights quant.ref.ts's dequantizeRows gives the CPU reference, so a
// kernel sums the reference's products (no xsum trick here), in its strategy's order, which per
// output never depends on the token count: gemm_broadcast and gemm_tiled one serial sum over the
// columns in order (broadcast: a chunk of 8 as matvec_rows adds it, add8 in sums.wgsl; tiled: one
// product at a time, per K range, the ranges added in order by gemm_split_reduce), as for 16-bit
// weights; gemm_regtile LANES serial sums, lane l over groups l, l + LANES, ..., added in lane
// order (16-bit weights: over chunks of 8 instead of groups).
// Assumes cols % 32 == 0 (the wrapper checks), so blocks never straddle a K range or a row.

// #include "params.wgsl"      Params (p)
// #include "products.wgsl"    the bindings w, up
// #include "../quant.wgsl"    QFORMAT and the formats' layout

const BLOCK_CHUNKS = 4u;

struct WBlock {
  a: vec4<u32>,  // codes: q8 weights 0..15, q4 all 32
  b: vec4<u32>,  // q8 weights 16..31 (q4: a copy of a, never used)
  d: f32,        // the group's scale
}

// Group g's scale of row `row`, from the one u32 word holding it (not the whole vec4 of scales).
fn block_scale_word(row: u32, g: u32) -> vec2<u32> {
  return vec2<u32>(scales_at(row, p.rows, p.cols) + g / 8u, (g % 8u) / 2u);
}

fn half_of(word: u32, g: u32) -> f32 {
  let pair = unpack2x16float(word);
  return select(pair.x, pair.y, (g & 1u) == 1u);
}

// A row is named by its index: its codes and its scales are in two planes.
fn row_start(row: u32) -> u32 {
  return row;
}

fn weight_block(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> WBlock {
  let at = codes_at(row, p.cols) + g * group_vec4s();
  let s = block_scale_word(row, g);
  return WBlock((*m)[at], (*m)[at + group_vec4s() - 1u], half_of((*m)[s.x][s.y], g));
}

fn chunk_of(blk: WBlock, c: u32) -> array<vec4<f32>, 2> {
  if (QFORMAT == Q8) {
    // Chunk c is code words 2c, 2c + 1 of the group's 8 (a then b).
    let v = select(blk.a, blk.b, c >= 2u);
    let i = (c % 2u) * 2u;
    return array<vec4<f32>, 2>(i8x4(v[i]) * blk.d, i8x4(v[i + 1u]) * blk.d);
  }
  // q4: chunk c is code word c; byte j holds weight j (low nibble) and weight j + 4 (high).
  let v = vec4<u32>(blk.a[c]) >> vec4<u32>(0u, 8u, 16u, 24u);
  let lo = vec4<f32>(v & vec4<u32>(15u)) - 8.0;
  let hi = vec4<f32>((v >> vec4<u32>(4u)) & vec4<u32>(15u)) - 8.0;
  return array<vec4<f32>, 2>(lo * blk.d, hi * blk.d);
}
