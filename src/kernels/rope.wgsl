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
// Layouts: q [tokens, heads, headDim] and k [tokens, kvHeads, headDim] f32, both rotated in
//   place (one dispatch for both: one fewer per layer); token t is at position pos0 + t.
//   table [maxPositions, headDim / 2] of vec2(cos, sin).
// Dispatch: workgroups (ceil((heads + kvHeads) * headDim / 2 / WG), tokens, 1) of WG invocations
// (an override, set from TILES in rope.ts); one invocation rotates one pair (i, i + half) of one
// head of one token, q's heads first, then k's.
// Limits: headDim even; tokens <= 65535; pos0 + tokens <= maxPositions of the table (checked
// by the wrapper).
//
// Entry point `batch_rows` (batched steps, continuous batching): token t is at position
// batchRows[t].x instead of pos0 + t (kernels/batch_rows.ts); the same rotation, same dispatch.
//
// Not fused with the KV-cache write: attention must read this chunk's rotated keys from k
// before they reach the cache (a prefill chunk longer than the rolling cache would overwrite
// keys its own early queries still need), so the write can only follow attention.

struct Params {
  heads: u32,
  kvHeads: u32,
  headDim: u32,
  pos0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> batchRows: array<vec2<u32>>; // `batch_rows` only

override WG: u32;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  rotate(gid.x, gid.y, p.pos0 + gid.y);
}

@compute @workgroup_size(WG)
fn batch_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
  rotate(gid.x, gid.y, batchRows[gid.y].x);
}

// Rotates pair `pairIndex` of token t (rows t of q and k) by the angles of position `pos`.
fn rotate(pairIndex: u32, t: u32, pos: u32) {
  let half = p.headDim / 2u;
  var pair = pairIndex; // over (heads + kvHeads) * half
  if (pair < p.heads * half) {
    let i = pair % half;
    let base = (t * p.heads + pair / half) * p.headDim + i;
    let cs = table[pos * half + i];
    let x0 = q[base];
    let x1 = q[base + half];
    q[base] = x0 * cs.x - x1 * cs.y;
    q[base + half] = x1 * cs.x + x0 * cs.y;
    return;
  }
  pair -= p.heads * half;
  if (pair < p.kvHeads * half) {
    // The same rotation on the other buffer (WGSL cannot pass a storage buffer to a function).
    let i = pair % half;
    let base = (t * p.kvHeads + pair / half) * p.headDim + i;
    let cs = table[pos * half + i];
    let x0 = k[base];
    let x1 = k[base + half];
    k[base] = x0 * cs.x - x1 * cs.y;
    k[base + half] = x1 * cs.x + x0 * cs.y;
  }
}
