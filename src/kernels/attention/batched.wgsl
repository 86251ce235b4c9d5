// Batched attention: strategy-independent entry for a step whose rows belong to different
// sequences (continuous batching). f32 math; the cache is f32 or f16 (the prepended
// kv_cache_*.wgsl defines KvChunk and kvLoad; the prepended softmax.wgsl the pieces of the
// online softmax that the attention kernels share).
//
// Row t of the step is at absolute position pos_t of sequence seq_t (the batch descriptor,
// rows[t] = (pos_t, seq_t)). For query head h, KV head g = h / (heads / kvHeads),
// scale = 1 / sqrt(headDim), and the keys it may see
//   lo = (window == 0) ? 0 : max(0, pos_t - window + 1),   hi = pos_t   (both inclusive):
//   s_j = scale * q[t, h, :] . K[seq_t, j, g, :]                      for lo <= j <= hi
//   out[t, h, :] = sum_j softmax(s)_j * V[seq_t, j, g, :]
// Every key, the row's own included, is read from the pool: position j of sequence c lives in
// cache row c * slots + j % slots. The caller writes the step's keys and values first
// (kv_write's `rows` entry point), so the rows of a prefill chunk see each other; each
// sequence's region must then hold window + (its rows in the step) - 1 positions
// (writeBatchRows checks). Reading the own key back from the cache (rounded in an f16 cache)
// differs from tiled.wgsl, which reads the chunk's keys exact from kNew: batched steps always
// run this kernel, so a sequence sees the same numbers whatever else is in its batch.
//
// Layouts (row-major, read in chunks of 4 values): q, out [tokens, heads, headDim] f32;
//   kCache, vCache [sequences * slots, kvHeads, headDim] in the cache's format;
//   rows [tokens] vec2<u32> (pos, seq).
// Dispatch: workgroups (kvHeads * headBlocks, tokens, 1) of WG invocations; workgroup
// (x, t) serves the HG = 4 query heads h0 .. h0 + 3 of one KV head (headBlocks =
// ceil(groupSize / HG)) for row t alone, so a row's result never depends on the other rows.
//
// Algorithm (online softmax over tiles of WG keys, the same order for every row):
//  1. Invocation i scores key first + i of the tile against the 4 heads (query in workgroup
//     memory) and publishes the 4 scores as a vec4.
//  2. Every invocation reads the tile's scores to find their maxima (so the running maxima m are
//     the same everywhere), rescales what was summed so far by exp(m_old - m) and publishes its
//     key's weights exp(s - m).
//  3. Invocation c < headDim / 4 sums the tile's weighted values of chunk c for the 4 heads,
//     keys in order. At the end the invocations' weight sums meet in workgroup memory, added
//     in index order, and out = acc / sum.
// The row's (pos, seq) reach the loop bounds through workgroupUniformLoad, so the barriers sit
// in uniform control flow.
//
// Workgroup memory: 5 KiB. Limits: headDim % 4 == 0 and headDim <= 4 * WG = 256;
// heads % kvHeads == 0; tokens <= 65535.

struct Params {
  heads: u32,
  kvHeads: u32,
  headDim: u32,
  slots: u32, // cache rows per sequence
  window: u32,
  scale: f32,
  headBlocks: u32, // ceil(groupSize / HG): workgroups per KV head
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kCache: array<KvChunk>;
@group(0) @binding(3) var<storage, read> vCache: array<KvChunk>;
@group(0) @binding(4) var<storage, read> rows: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;

// WG and HG are set by batched.ts from BATCHED_TILES (one source for the wrapper's dispatch).
override WG: u32; // invocations per workgroup, and keys per tile
override HG: u32; // query heads per workgroup; their scores and weights travel as a vec4, so 4

var<workgroup> row: vec2<u32>;
var<workgroup> qShared: array<vec4<f32>, HG * WG>; // HG heads x headDim / 4 chunks
var<workgroup> tile: array<vec4<f32>, WG>; // the tile's scores, then its weights, then the sums

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  if (tid == 0u) {
    row = rows[t];
  }
  let r = workgroupUniformLoad(&row);
  let pos = r.x;
  let seqBase = r.y * p.slots;

  let groupSize = p.heads / p.kvHeads;
  let g = wid.x / p.headBlocks;
  let h0 = g * groupSize + (wid.x % p.headBlocks) * HG;
  let nh = min(HG, groupSize - (wid.x % p.headBlocks) * HG);
  let chunks = p.headDim / 4u;
  for (var i = tid; i < HG * chunks; i += WG) {
    qShared[i] = select(vec4<f32>(0.0), q[(t * p.heads + h0) * chunks + i], i < nh * chunks);
  }
  workgroupBarrier();

  let lo = firstKey(pos, p.window);
  let rowStride = p.kvHeads * chunks;
  let headOffset = g * chunks;
  var m = vec4<f32>(NEG_BIG);
  var sum = vec4<f32>(0.0); // this invocation's keys' share of sum(exp(s - m))
  var acc = HeadSums(); // chunk tid of sum(exp(s - m) * v), heads h0 .. h0 + 3

  for (var first = lo; first <= pos; first += WG) {
    let inTile = min(WG, pos + 1u - first);
    // 1. Scores of key first + tid.
    var s = vec4<f32>(NEG_BIG);
    if (tid < inTile) {
      let base = (seqBase + (first + tid) % p.slots) * rowStride + headOffset;
      var d = vec4<f32>(0.0);
      for (var k = 0u; k < chunks; k++) {
        let key = kvLoad(kCache[base + k]);
        d += headDots(qShared[k], qShared[chunks + k], qShared[2u * chunks + k],
                      qShared[3u * chunks + k], key);
      }
      s = d * p.scale;
    }
    tile[tid] = s;
    workgroupBarrier();

    // 2. Running maxima, rescaling, this key's weights.
    let rescale = raiseMax(&m, tileMaxima(&tile, inTile));
    let w = keyWeights(s, m, tid < inTile);
    sum = sum * rescale + w;
    acc = rescaleSums(acc, rescale);
    workgroupBarrier(); // every invocation has read the scores
    tile[tid] = w;
    workgroupBarrier();

    // 3. Weighted values of the tile, chunk tid.
    if (tid < chunks) {
      for (var i = 0u; i < inTile; i++) {
        let v = kvLoad(vCache[(seqBase + (first + i) % p.slots) * rowStride + headOffset + tid]);
        acc = addWeighted(acc, tile[i], v);
      }
    }
    workgroupBarrier(); // before the next tile overwrites the weights
  }

  tile[tid] = sum;
  workgroupBarrier();
  var total = vec4<f32>(0.0);
  for (var i = 0u; i < WG; i++) {
    total += tile[i];
  }
  if (tid < chunks) {
    let o = (t * p.heads + h0) * chunks + tid;
    if (nh > 0u) { out[o] = acc.head0 / total.x; }
    if (nh > 1u) { out[o + chunks] = acc.head1 / total.y; }
    if (nh > 2u) { out[o + 2u * chunks] = acc.head2 / total.z; }
    if (nh > 3u) { out[o + 3u * chunks] = acc.head3 / total.w; }
  }
}
