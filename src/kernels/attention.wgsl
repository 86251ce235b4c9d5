// Causal grouped-query attention with Mistral's sliding window, f32 throughout.
//
// For query token t (absolute position pos = pos0 + t) and query head h, with KV head
// g = h / (heads / kvHeads), scale = 1 / sqrt(headDim), and the keys it may see
//   lo = (window == 0) ? 0 : max(0, pos - window + 1),   hi = pos   (both inclusive):
//   s_j = scale * q[t, h, :] . K[j, g, :]                         for lo <= j <= hi
//   out[t, h, :] = sum_j softmax(s)_j * V[j, g, :]
// K[j] / V[j] for j < pos0 come from the rolling cache, slot j % slots; for j >= pos0 from
// the current chunk, row j - pos0 of kNew / vNew (not yet written to the cache, so a chunk
// longer than the cache can still see all its own keys).
//
// Layouts (row-major f32, read as vec4): q, out [tokens, heads, headDim];
//   kNew, vNew [tokens, kvHeads, headDim]; kCache, vCache [slots, kvHeads, headDim].
// Dispatch: workgroups (heads, tokens, 1), one workgroup of WG = 64 invocations per (head, token).
//
// Algorithm (online softmax, "flash" style): the keys lo..hi are walked in tiles of WG.
//  1. Invocation i scores key lo + tile * WG + i (a headDim dot product with q, held in
//     workgroup memory) and publishes it.
//  2. Every invocation reads the tile's WG scores to find the tile maximum, so the running
//     maximum m is identical in all invocations. Each turns its own score into
//     p = exp(s - m) and publishes it; previous sums are rescaled by exp(m_old - m).
//  3. For the weighted sum of V, the invocations are regrouped: invocation i owns the vec4
//     chunk c = i % C of the head (C = headDim / 4) and handles the keys of the tile with
//     index = i / C (mod G = WG / C): with headDim 128, two groups of 32 split each tile.
//  At the end the G partial accumulators and the WG partial sums of p are added up in
//  workgroup memory and the output is acc / sum(p).
// Two barriers per tile; scores never leave workgroup memory, so any number of keys works.
//
// Limits: headDim % 4 == 0 and headDim <= 4 * WG = 256; heads % kvHeads == 0;
// tokens <= 65535; the cache must still hold every past key a query can see:
// slots >= min(pos0, window - 1) with a window, slots >= pos0 without (checked by the wrapper).

struct Params {
  tokens: u32,
  pos0: u32,
  heads: u32,
  kvHeads: u32,
  headDim: u32,
  slots: u32,
  window: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kNew: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vNew: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> kCache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> vCache: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

const WG: u32 = 64u;
// A finite stand-in for -infinity: WGSL lets compilers assume floats are finite.
const NEG_BIG: f32 = -3.0e38;

var<workgroup> qShared: array<vec4<f32>, WG>; // the query head, headDim / 4 chunks
var<workgroup> scores: array<f32, WG>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> accShared: array<vec4<f32>, WG>;
var<workgroup> sumShared: array<f32, WG>;

// Offset (in vec4 chunks) of key/value row j, KV head g, in the buffer that holds it:
// the cache for past positions (j < pos0), the current chunk for the rest.
fn kvRow(j: u32, g: u32) -> u32 {
  let chunks = p.headDim / 4u;
  if (j < p.pos0) {
    return ((j % p.slots) * p.kvHeads + g) * chunks;
  }
  return ((j - p.pos0) * p.kvHeads + g) * chunks;
}

fn dotKey(j: u32, g: u32) -> f32 {
  let chunks = p.headDim / 4u;
  let row = kvRow(j, g);
  var s = 0.0;
  if (j < p.pos0) {
    for (var c = 0u; c < chunks; c++) {
      s += dot(qShared[c], kCache[row + c]);
    }
  } else {
    for (var c = 0u; c < chunks; c++) {
      s += dot(qShared[c], kNew[row + c]);
    }
  }
  return s;
}

fn value(j: u32, g: u32, c: u32) -> vec4<f32> {
  let row = kvRow(j, g);
  if (j < p.pos0) {
    return vCache[row + c];
  }
  return vNew[row + c];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let t = wid.y;
  let g = h / (p.heads / p.kvHeads);
  let chunks = p.headDim / 4u;
  let pos = p.pos0 + t;
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) {
    lo = pos + 1u - p.window;
  }
  let count = pos + 1u - lo; // keys lo..pos

  let qRow = (t * p.heads + h) * chunks;
  if (tid < chunks) {
    qShared[tid] = q[qRow + tid];
  }
  workgroupBarrier();

  // V-phase role of this invocation (see header): chunk c, key group grp of `groups`.
  let c = tid % chunks;
  let groups = WG / chunks;
  let grp = tid / chunks;

  var m = NEG_BIG; // running maximum score, same in every invocation
  var sum = 0.0; // this invocation's share of sum(exp(s - m))
  var acc = vec4<f32>(0.0); // this invocation's share of sum(exp(s - m) * v[c])

  let tiles = (count + WG - 1u) / WG;
  for (var tile = 0u; tile < tiles; tile++) {
    let first = lo + tile * WG;
    let inTile = min(WG, pos + 1u - first);

    // 1. Score one key.
    let valid = tid < inTile;
    var s = NEG_BIG;
    if (valid) {
      s = dotKey(first + tid, g) * p.scale;
    }
    scores[tid] = s;
    workgroupBarrier();

    // 2. New running maximum; rescale what was summed so far; publish this key's weight.
    var tileMax = NEG_BIG;
    for (var i = 0u; i < inTile; i++) {
      tileMax = max(tileMax, scores[i]);
    }
    let mNew = max(m, tileMax);
    let rescale = exp(m - mNew);
    m = mNew;
    var w = 0.0;
    if (valid) {
      w = exp(s - mNew);
    }
    sum = sum * rescale + w;
    acc *= rescale;
    probs[tid] = w;
    workgroupBarrier();

    // 3. Weighted sum of this tile's values, for chunk c, keys grp, grp + groups, ...
    if (grp < groups) {
      for (var i = grp; i < inTile; i += groups) {
        acc += probs[i] * value(first + i, g, c);
      }
    }
  }

  // Combine: the p-sums of all invocations, the accumulators of all key groups.
  sumShared[tid] = sum;
  accShared[tid] = acc;
  workgroupBarrier();
  if (tid < chunks) {
    var total = 0.0;
    for (var i = 0u; i < WG; i++) {
      total += sumShared[i];
    }
    var o = vec4<f32>(0.0);
    for (var k = 0u; k < groups; k++) {
      o += accShared[k * chunks + tid];
    }
    out[qRow + tid] = o / total;
  }
}
