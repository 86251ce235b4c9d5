// Embedding gather: out[t, c] = table[ids[t], c], widened to f32 (Mistral's embed_tokens).
//
// Layouts (ids and Params: embedding_part.wgsl)
//   table: the rows row0 .. row0 + rows of one GpuMatrix part of embed_tokens [vocab, cols],
//      stored as f32, f16 or bf16 (DTYPE), read as u32 words (one f32 or two 16-bit values).
//   out: f32 [tokens, cols] row-major, read/written as vec2<f32> pairs (cols is even).
//
// An invocation copies one pair of columns of one token, if that token's id falls in this
// dispatch's part (the parts, and ids past the vocabulary: embedding_part.wgsl).
//
// Dispatch: (ceil(cols / 2 / WG), tokens) workgroups, once per part (WG: override, set by embedding.ts).
// Assumes: cols even.

// #include "embedding_part.wgsl"  Params (p), the ids, part_row
// #include "weights.wgsl"         DTYPE, F32, widen2

@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<vec2<f32>>;

override WG: u32;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let pair = gid.x;      // columns 2 * pair, 2 * pair + 1
  let t = gid.y;
  let pairs = p.cols / 2u;
  if (pair >= pairs) {
    return;
  }
  let r = part_row(t);
  if (r == NOT_HERE) {
    return;
  }
  var v = vec2<f32>(0.0);  // zeros: an id past the vocabulary
  if (r != PAST_VOCAB) {
    if (DTYPE == F32) {
      let base = r * p.cols + 2u * pair;
      v = vec2<f32>(bitcast<f32>(table[base]), bitcast<f32>(table[base + 1u]));
    } else {
      v = widen2(table[r * pairs + pair]);
    }
  }
  out[t * pairs + pair] = v;
}
