// Embedding gather over a quantized table (q8, q4): out[t, c] = w[ids[t], c], where w is the
// dequantized weight (the formats: src/kernels/quant.ref.ts; the decoding: quant.wgsl).
// embedding.wgsl is its twin for tables stored as f32, f16 or bf16.
//
// Layouts (ids and Params: embedding_part.wgsl)
//   table: one GpuMatrix part of embed_tokens [vocab, cols], rows row0 .. row0 + rows, read as
//      vec4<u32>: the part's codes plane, then its scales plane (quant.wgsl's codes_at, scales_at).
//   out: f32 [tokens, cols] row-major, written as vec4<f32>.
//
// An invocation dequantizes one group of 32 columns of one token's row in registers (its one or
// two vec4 of codes and its scale) and writes 8 vec4, if that token's id falls in this dispatch's
// part (the parts, and ids past the vocabulary: embedding_part.wgsl).
//
// Dispatch: (ceil(cols / 32 / WG), tokens) workgroups, once per part (WG: override, set by embedding.ts).
// Assumes: cols % 32 == 0.

// #include "embedding_part.wgsl"  Params (p), the ids, part_row
// #include "quant.wgsl"           QFORMAT and the formats' decoding

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
    let at = codes_at(r, p.cols) + g * group_vec4s();
    let a = table[at];
    var b = vec4<u32>(0u);
    if (QFORMAT == Q8) {
      b = table[at + 1u];
    }
    let d = scale_of(table[scales_at(r, p.rows, p.cols) + g / 8u], g % 8u);
    w = group_weights(a, b, d);
  }
  let o = t * groups * 8u + g * 8u;
  for (var i = 0u; i < 8u; i++) {
    out[o + i] = w[i];
  }
}
