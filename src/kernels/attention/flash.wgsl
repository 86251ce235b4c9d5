// Causal grouped-query attention with Mistral's sliding window for prefill chunks (tokens > 1):
// strategy `flash` (plan.prefillAttention). A workgroup takes a block of query rows, BT tokens x
// HB query heads that share one KV head, and walks the block's keys in tiles of BK keys staged
// in workgroup memory: every key and value row is read from memory once per workgroup and used
// by all BT * HB query rows (tiled.wgsl reads them once per query token). f32 math; the cache
// is f32 or f16 (the included <kv_cache> defines KvChunk and kvLoad; softmax.wgsl the pieces of
// the online softmax that the attention kernels share: here NEG_BIG and firstKey).
//
// Math, for query token t (absolute position pos = pos0 + t) and query head h, with KV head
// g = h / (heads / kvHeads), scale = 1 / sqrt(headDim), and the keys it may see
//   lo(pos) = (window == 0) ? 0 : max(0, pos - window + 1),   hi(pos) = pos   (both inclusive):
//   s_j = scale * q[t, h, :] . K[j, g, :]                         for lo(pos) <= j <= pos
//   out[t, h, :] = sum_j softmax(s)_j * V[j, g, :]
// K[j] / V[j] for j < pos0 come from the rolling cache, slot j % slots of the sequence's
// region (pool rows region ..); for j >= pos0 from the current chunk, row row0 + j - pos0 of
// kNew / vNew (not yet written to the cache, so a chunk longer than the cache or the window
// still sees all its own keys).
//
// Layouts (row-major, read in chunks of 4 values): q, out [step rows, heads, headDim] f32, token
//   t in row row0 + t (a step's rows hold several sequences); kNew, vNew [step rows, kvHeads,
//   headDim] f32; kCache, vCache [sequences * slots, kvHeads, headDim] in the cache's format
//   (vec4<f32>, or 4 f16 in a vec2<u32>).
//
// Dispatch: workgroups (kvHeads * headBlocks, ceil(tokens / BT), 1) of WG = BT * HB * LANES
// invocations; headBlocks = ceil(groupSize / HB). BT, HB, LANES, BK are override constants set
// from FLASH_TILES in index.ts.
//
// Work split: query row r = ti * HB + hi (token t0 + ti, head h0 + hi) belongs to the LANES
// invocations r * LANES .. r * LANES + LANES - 1; lane l holds the row's q chunks
// c = l, l + LANES, l + 2 LANES, ... (scaled) and its output accumulators for the same chunks,
// in registers. The block's keys are the union of its rows' ranges, lo(first position) ..
// last position: contiguous, and every key in it is seen by some row, so tiles wholly outside
// the causal mask or the window are never visited. Per tile of n <= BK keys:
//  1. All invocations stage the tile's K rows in kvTile (f16 widened once here).
//  2. Each lane adds up its chunks of q . K[i] for every key i of the tile into partial[].
//  3. Each lane sums its row's LANES partials per key (all lanes of a row do the same sums, so
//     they hold identical scores and need no broadcast), masks keys outside [lo(pos), pos],
//     and updates the row's online softmax: m = max(m, tile max), weights p_i = exp(s_i - m)
//     kept in registers, l and its accumulators rescaled by exp(m_old - m). Meanwhile the
//     tile's V rows are staged over the K rows (the K reads ended at the barrier before).
//  4. acc[c] += sum_i p_i * V[i, c] for the lane's chunks.
// Three barriers per tile. At the end out = acc / l; every real row sees at least its own
// key, so l > 0. Rows past the chunk's end or past the group's heads compute but never write.
//
// Workgroup memory: BK * LANES * MAX_SLICE vec4 (kvTile) + BT * HB * BK * LANES f32 (partial):
// 12 KiB with FLASH_TILES (fits WebGPU's default 16 KiB).
//
// Limits: headDim % 4 == 0 and headDim <= 4 * LANES * MAX_SLICE (128 with LANES = 4);
// BK <= MAX_BK; heads % kvHeads == 0; ceil(tokens / BT) <= 65535; the cache must still hold
// every past key a query can see (checked by the wrapper).

// #include "chunk.wgsl"       Params (headBlocks = ceil(groupSize / HB)), bindings 0-6: p, q, kNew, vNew, kCache, vCache, out
// #include <kv_cache>         kvLoad, kvRound: kv_cache_f32.wgsl or kv_cache_f16.wgsl
// #include "softmax.wgsl"     NEG_BIG, firstKey

override BT: u32; // query tokens per workgroup
override HB: u32; // query heads per workgroup (sharing one KV head)
override LANES: u32; // invocations per query row
override BK: u32; // keys per tile, <= MAX_BK
override WG: u32 = BT * HB * LANES;

// Register arrays need constant sizes: a lane holds at most MAX_SLICE chunks of a row, and a
// row at most MAX_BK weights of a tile.
// MAX_SLICE, MAX_BK: declared by the loader from CAPACITY (../table.ts).

var<workgroup> kvTile: array<vec4<f32>, BK * LANES * MAX_SLICE>; // [BK keys][chunks], K then V
var<workgroup> partial: array<f32, BT * HB * BK * LANES>; // [row][key][lane]

// Chunk c of the key (values: of the value) at position j of KV head g, from the cache or the
// chunk. `values` is a constant at each call, so the compiler drops the other buffer's branch.
fn loadKV(values: bool, j: u32, g: u32, c: u32, chunks: u32) -> vec4<f32> {
  if (j < p.pos0) {
    let e = ((p.region + j % p.slots) * p.kvHeads + g) * chunks + c;
    if (values) {
      return kvLoad(vCache[e]);
    }
    return kvLoad(kCache[e]);
  }
  let e = ((p.row0 + j - p.pos0) * p.kvHeads + g) * chunks + c;
  if (values) {
    return kvRound(vNew[e]);
  }
  return kvRound(kNew[e]);
}

// All invocations copy the n keys (values: values) from position `first` on into kvTile; those
// before `lo` (the block's first key: a tile starts at a multiple of BK) as zeros, never read
// from a slot that may hold another position.
fn stageTile(values: bool, first: u32, n: u32, lo: u32, g: u32, chunks: u32, tid: u32) {
  for (var e = tid; e < n * chunks; e += WG) {
    let i = e / chunks;
    let c = e - i * chunks;
    var kv = vec4<f32>(0.0);
    if (first + i >= lo) {
      kv = loadKV(values, first + i, g, c, chunks);
    }
    kvTile[i * chunks + c] = kv;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let groupSize = p.heads / p.kvHeads;
  let g = wid.x / p.headBlocks; // the KV head
  let hb = wid.x % p.headBlocks;
  let h0 = g * groupSize + hb * HB; // first query head of this workgroup
  let nh = min(HB, groupSize - hb * HB); // how many of the HB are real
  let t0 = wid.y * BT; // first token of this block
  let nt = min(BT, p.tokens - t0); // how many of the BT are real
  let chunks = p.headDim / 4u;

  let r = tid / LANES; // this invocation's query row
  let lane = tid % LANES;
  let ti = r / HB;
  let hi = r % HB;
  let real = ti < nt && hi < nh;
  let pos = p.pos0 + t0 + ti;
  let lo = firstKey(pos, p.window); // first key this row sees

  // The block's keys: from what its first token sees to its last token.
  let blockLo = firstKey(p.pos0 + t0, p.window);
  let blockHi = p.pos0 + t0 + nt - 1u;

  let qRow = (p.row0 + t0 + ti) * p.heads + h0 + hi; // row of q / out (valid when real)
  var qv: array<vec4<f32>, MAX_SLICE>;
  var acc: array<vec4<f32>, MAX_SLICE>;
  for (var s = 0u; s < MAX_SLICE; s++) {
    let c = lane + s * LANES;
    qv[s] = select(vec4<f32>(0.0), q[qRow * chunks + c] * p.scale, real && c < chunks);
    acc[s] = vec4<f32>(0.0);
  }
  var m = NEG_BIG; // running maximum score of the row (same in all its lanes)
  var l = 0.0; // running sum of exp(s - m)
  var pr: array<f32, MAX_BK>; // this tile's weights of the row

  // Tiles start at multiples of BK, so a row meets its keys in the same tiles whichever block
  // (whichever chunking of the prompt) it is in; the keys of a tile it does not see weigh 0
  // exactly, so its result does not depend on the chunking.
  for (var first = blockLo - blockLo % BK; first <= blockHi; first += BK) {
    let n = min(BK, blockHi + 1u - first);

    // 1. Stage the tile's keys.
    stageTile(false, first, n, blockLo, g, chunks, tid);
    workgroupBarrier();

    // 2. This lane's share of each key's score.
    for (var i = 0u; i < n; i++) {
      var d = 0.0;
      for (var s = 0u; s < MAX_SLICE; s++) {
        let c = lane + s * LANES;
        if (c < chunks) {
          d += dot(qv[s], kvTile[i * chunks + c]);
        }
      }
      partial[(r * BK + i) * LANES + lane] = d;
    }
    workgroupBarrier();

    // 3. The row's scores, masked; online softmax. Then stage the tile's values over its keys.
    var tileMax = NEG_BIG;
    for (var i = 0u; i < BK; i++) {
      var sc = NEG_BIG;
      let j = first + i;
      if (i < n && j >= lo && j <= pos) {
        sc = 0.0;
        for (var k = 0u; k < LANES; k++) {
          sc += partial[(r * BK + i) * LANES + k];
        }
      }
      pr[i] = sc;
      tileMax = max(tileMax, sc);
    }
    let mNew = max(m, tileMax);
    let rescale = exp(m - mNew);
    m = mNew;
    var tileSum = 0.0;
    for (var i = 0u; i < BK; i++) {
      let j = first + i;
      // A masked key's weight must be 0 even when every score so far is NEG_BIG (exp(0) = 1).
      let w = select(0.0, exp(pr[i] - mNew), i < n && j >= lo && j <= pos);
      pr[i] = w;
      tileSum += w;
    }
    l = l * rescale + tileSum;
    for (var s = 0u; s < MAX_SLICE; s++) {
      acc[s] *= rescale;
    }
    stageTile(true, first, n, blockLo, g, chunks, tid);
    workgroupBarrier();

    // 4. Weighted sum of the tile's values, for this lane's chunks.
    for (var i = 0u; i < n; i++) {
      let w = pr[i];
      for (var s = 0u; s < MAX_SLICE; s++) {
        let c = lane + s * LANES;
        if (c < chunks) {
          acc[s] += w * kvTile[i * chunks + c];
        }
      }
    }
    workgroupBarrier();
  }

  if (real) {
    for (var s = 0u; s < MAX_SLICE; s++) {
      let c = lane + s * LANES;
      if (c < chunks) {
        out[qRow * chunks + c] = acc[s] / l;
      }
    }
  }
}
