// Rotary position embedding (RoPE), Hugging Face "rotate half" convention, in place.
//
// For a head vector x of size D = headDim at absolute position pos, with half = D / 2 and
// inv_freq[i] = 1 / theta^(2i / D), angle a_i = pos * inv_freq[i], for i < half:
//   x'[i]        = x[i] * cos(a_i) - x[i + half] * sin(a_i)
//   x'[i + half] = x[i + half] * cos(a_i) + x[i] * sin(a_i)
// (that is q * cos + rotate_half(q) * sin with cos = cat(cos(a), cos(a)); the rotated
// pairs are (i, i + half), not Meta's interleaved (2i, 2i + 1)).
//
// The angles are not computed here: pos * inv_freq reaches ~3e4 radians, where an f32
// product and an f32 cos would already be off in the third decimal. The table holds
// cos/sin computed on the CPU in float64 and rounded once to f32.
//
// Layouts: x [tokens, heads, headDim] f32, rotated in place; token t is at position pos0 + t.
//   table [maxPositions, headDim / 2] of vec2(cos, sin).
// Dispatch: workgroups (ceil(heads * headDim / 2 / 64), tokens, 1); one invocation rotates one
// pair (i, i + half) of one head of one token. Limits: headDim even; tokens <= 65535;
// pos0 + tokens <= maxPositions of the table (checked by the wrapper).

struct Params {
  heads: u32,
  headDim: u32,
  pos0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let half = p.headDim / 2u;
  let pair = gid.x; // over heads * half
  if (pair >= p.heads * half) {
    return;
  }
  let t = gid.y;
  let head = pair / half;
  let i = pair % half;
  let base = (t * p.heads + head) * p.headDim + i;
  let cs = table[(p.pos0 + t) * half + i];
  let x0 = x[base];
  let x1 = x[base + half];
  x[base] = x0 * cs.x - x1 * cs.y;
  x[base + half] = x1 * cs.x + x0 * cs.y;
}
