// The pieces of the online softmax that the attention kernels share, included by tiled.wgsl,
// split.wgsl and flash.wgsl; not a kernel itself. The order of the floating-point
// operations in each function is part of every kernel's result: the batched decode rows are
// compared bit for bit with single-sequence decode, so change one only with all its callers.
//
// The 4-head helpers serve the kernels whose workgroup takes 4 query heads of one KV head
// (tiled, split, batched): a vec4 carries the 4 heads' scores, maxima and weights side by side,
// and a HeadSums the 4 heads' weighted sums of one value chunk. flash.wgsl keeps one query row
// per lane and uses only NEG_BIG and firstKey.

// A finite stand-in for -infinity: WGSL lets compilers assume floats are finite.
const NEG_BIG: f32 = -3.0e38;

// The first key a query at position pos sees under Mistral's sliding window (window 0:
// unlimited): it sees keys firstKey .. pos, both inclusive.
fn firstKey(pos: u32, window: u32) -> u32 {
  if (window > 0u && pos + 1u > window) {
    return pos + 1u - window;
  }
  return 0u;
}

// The scores of one chunk of a key against the same chunk of the 4 query heads.
fn headDots(qa: vec4<f32>, qb: vec4<f32>, qc: vec4<f32>, qd: vec4<f32>, key: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(qa, key), dot(qb, key), dot(qc, key), dot(qd, key));
}

// The per-head maxima of the first n score vectors a tile published in workgroup memory (every
// kernel that includes this file declares `override WG`).
fn tileMaxima(scores: ptr<workgroup, array<vec4<f32>, WG>>, n: u32) -> vec4<f32> {
  var tileMax = vec4<f32>(NEG_BIG);
  for (var i = 0u; i < n; i++) {
    tileMax = max(tileMax, (*scores)[i]);
  }
  return tileMax;
}

// Raises the running maxima *m to cover a tile whose maxima are tileMax, and returns
// exp(m_old - m_new): the factor for everything summed before the tile.
fn raiseMax(m: ptr<function, vec4<f32>>, tileMax: vec4<f32>) -> vec4<f32> {
  let mNew = max(*m, tileMax);
  let rescale = exp(*m - mNew);
  *m = mNew;
  return rescale;
}

// A key's weights exp(s - m) for the 4 heads; 0 for a key past the tile's end (real false),
// which scored NEG_BIG: exp(NEG_BIG - m) is 1, not 0, while every score so far is NEG_BIG.
fn keyWeights(s: vec4<f32>, m: vec4<f32>, real: bool) -> vec4<f32> {
  return select(vec4<f32>(0.0), exp(s - m), real);
}

// One value chunk's running sum of exp(s - m) * v for each of the 4 heads (head0 is the
// weights' .x). HeadSums() is all zeros.
struct HeadSums {
  head0: vec4<f32>,
  head1: vec4<f32>,
  head2: vec4<f32>,
  head3: vec4<f32>,
}

// The sums rescaled per head (by raiseMax's factor).
fn rescaleSums(a: HeadSums, r: vec4<f32>) -> HeadSums {
  return HeadSums(a.head0 * r.x, a.head1 * r.y, a.head2 * r.z, a.head3 * r.w);
}

// The sums plus one key's value chunk v under its 4 heads' weights pw.
fn addWeighted(a: HeadSums, pw: vec4<f32>, v: vec4<f32>) -> HeadSums {
  return HeadSums(a.head0 + pw.x * v, a.head1 + pw.y * v, a.head2 + pw.z * v, a.head3 + pw.w * v);
}
