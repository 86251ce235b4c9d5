// Embedding gather over a table in one of llama.cpp's block formats (the format's decode file
// bound to <ggml_format>): out[t, c] = w[ids[t], c], the dequantized weight, bit for bit
// dequant.ref.ts's. ../embedding_quant.wgsl is its q8/q4 twin.
//
// Layouts (ids and Params: ../embedding_part.wgsl)
//   table: one GpuMatrix part of token_embd [vocab, cols], rows row0 .. row0 + rows, read as
//      vec4<u32>, its rows one after another (ggml.wgsl, pack.ts).
//   out: f32 [tokens, cols] row-major, written as vec4<f32>.
//
// An invocation decodes one group of 32 columns of one token's row in registers and writes
// 8 vec4, if that token's id falls in this dispatch's part (embedding_part.wgsl).
//
// Dispatch: (ceil(cols / 32 / WG), tokens) workgroups, once per part (WG: override, set by embedding.ts).
// Assumes: cols whole blocks of the format.

// #include "../embedding_part.wgsl"  Params (p), the ids, part_row
// #include "ggml.wgsl"               row_words, group_weights
// #include <ggml_format>             the format's group_codes: ggml/q4_k.wgsl, ...

@group(0) @binding(2) var<storage, read> table: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

override WG: u32;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let g = gid.x;         // group of columns 32 g .. 32 g + 31
  let t = gid.y;
  let groups = p.cols / 32u;
  if (g >= groups) {
    return;
  }
  let r = part_row(t);
  if (r == NOT_HERE) {
    return;
  }
  var w: array<vec4<f32>, 8>;  // zeros: an id past the vocabulary
  if (r != PAST_VOCAB) {
    w = group_weights(&table, r * row_words(p.cols), g);
  }
  let o = t * groups * 8u + g * 8u;
  for (var i = 0u; i < 8u; i++) {
    out[o + i] = w[i];
  }
}
