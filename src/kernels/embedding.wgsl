// Embedding gather: out[t, c] = table[ids[t], c], widened to f32 (Mistral's embed_tokens).
//
// Layouts
//   ids: u32 [tokens] token ids.
//   table: the rows row0 .. row0 + rows of one GpuMatrix part of embed_tokens [vocab, cols],
//      stored as f32, f16 or bf16 (DTYPE), read as u32 words (one f32 or two 16-bit values).
//   out: f32 [tokens, cols] row-major, read/written as vec2<f32> pairs (cols is even).
//
// Each dispatch covers one part; an invocation copies one pair of columns of one token if
// that token's id falls in this part, and does nothing otherwise, so the dispatches of all
// parts together fill every row. Ids >= vocab (which the tokenizer never produces) get zeros
// from the last part, so the output is always defined.
//
// Dispatch: (ceil(cols / 2 / WG), tokens) workgroups, once per part (WG: override, set by embedding.ts).
// Assumes: cols even.

struct Params {
  cols: u32,
  row0: u32,      // first vocabulary row held by this part
  rows: u32,      // rows in this part
  is_last: u32,   // 1 for the last part: it also zero-fills out-of-range ids
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<vec2<f32>>;

// DTYPE, F32/F16 and the widening functions come from weights.wgsl, prepended by the wrapper.

override WG: u32;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let pair = gid.x;      // columns 2 * pair, 2 * pair + 1
  let t = gid.y;
  let pairs = p.cols / 2u;
  if (pair >= pairs) {
    return;
  }
  let id = ids[t];
  if (id < p.row0) {
    return;
  }
  let r = id - p.row0;
  var v = vec2<f32>(0.0);
  if (r < p.rows) {
    if (DTYPE == F32) {
      let base = r * p.cols + 2u * pair;
      v = vec2<f32>(bitcast<f32>(table[base]), bitcast<f32>(table[base + 1u]));
    } else {
      v = widen2(table[r * pairs + pair]);
    }
  } else if (p.is_last == 0u) {
    return;  // a later part holds this row
  }
  out[t * pairs + pair] = v;
}
