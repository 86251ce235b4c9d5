// Causal grouped-query attention with Mistral's sliding window: strategy `tiled`, one workgroup
// walks all the keys of its query heads (one pass). f32 math; the cache is f32 or f16 (the
// included <kv_cache> defines KvChunk and kvLoad; softmax.wgsl the pieces of the online softmax
// that the attention kernels share). It serves every prefill chunk under
// both strategies, and decode under `tiled` (and under `split` when the context is short).
//
// For query token t (absolute position pos = pos0 + t) and query head h, with KV head
// g = h / (heads / kvHeads), scale = 1 / sqrt(headDim), and the keys it may see
//   lo = (window == 0) ? 0 : max(0, pos - window + 1),   hi = pos   (both inclusive):
//   s_j = scale * q[t, h, :] . K[j, g, :]                         for lo <= j <= hi
//   out[t, h, :] = sum_j softmax(s)_j * V[j, g, :]
// K[j] / V[j] for j < pos0 come from the rolling cache, slot j % slots of the sequence's
// region (pool rows region ..); for j >= pos0 from the current chunk, row row0 + j - pos0 of
// kNew / vNew (not yet written to the cache, so a chunk longer than the cache can still see
// all its own keys).
// Entry `decode_rows` (a decode step, continuous batching): row t = row0 .. row0 + tokens - 1
// is one token of its own sequence at batchRows[t] = (pos, seq); pos0 = pos for that row alone, its
// past keys from the sequence's region (cache rows seq * slots + j % slots) and its own key
// from row t of kNew / vNew: the same numbers in the same order as `main` decoding that
// sequence alone.
//
// Layouts (row-major, read in chunks of 4 values): q, out [step rows, heads, headDim] f32, the
//   chunk's token t in row row0 + t (a step's rows hold several sequences); kNew, vNew
//   [step rows, kvHeads, headDim] f32; kCache, vCache [sequences * slots, kvHeads, headDim] in
//   the cache's format (vec4<f32>, or 4 f16 in a vec2<u32>); decode_rows: batchRows [step rows]
//   vec2<u32> (pos, seq).
// Dispatch: workgroups (kvHeads * headBlocks, tokens, 1) of WG invocations. A workgroup
// serves HG = 4 query heads that share one KV head (headBlocks = ceil(groupSize / HG) workgroups
// per KV head), so every key and value row it reads is used 4 times: K/V traffic, which
// dominates decode, is a quarter of one workgroup per query head. A vec4 carries the
// 4 heads' scores, maxima and weights side by side.
//
// Algorithm (online softmax, "flash" style): the keys lo..hi are walked in tiles of
// TILE = KPL * WG keys.
//  1. Invocation i scores the KPL = 4 keys i, i + WG, i + 2 WG, i + 3 WG of the tile against
//     the 4 query heads (held in workgroup memory), keeps the scores in registers and
//     publishes their maxima. When all four keys come from the cache (every full tile of a
//     decode step), one loop scores them together, so each query chunk read from workgroup
//     memory serves 4 keys: on lavapipe every such read is a per-lane gather, and before
//     this the q reads cost more than the key reads themselves.
//  2. Every invocation reads the WG published maxima to find the tile maxima, so the running
//     maxima m are identical in all invocations. Each turns its own scores into weights
//     exp(s - m) and publishes them; previous sums are rescaled by exp(m_old - m).
//  3. For the weighted sum of V, the invocations are regrouped: with C = headDim / 4 vec4
//     chunks per head and H = ceil(C / 2), invocation i owns the chunks c = i % H and c + H
//     and handles the keys of the tile with index = i / H (mod G = WG / H): with headDim 128,
//     four groups of 16 split each tile. Two chunks per invocation halve the reads of the
//     weights from workgroup memory per value read. It keeps one accumulator per query head
//     and chunk.
//  At the end the G partial accumulators and the WG partial sums of weights are added up
//  in workgroup memory (chunks c, then chunks c + H) and each head's output is acc / sum.
// Within a tile, cached keys (positions < pos0) come first and chunk keys after, so phase 3
// runs two branch-free loops instead of choosing a buffer per key.
// Two barriers per tile; scores never leave the workgroup, so any number of keys works.
//
// Splitting the keys across workgroups is the `split` strategy (split.wgsl); on lavapipe it
// measures slower (bench/RESULTS.md, "Attention strategies and the f16 KV cache").
//
// Workgroup memory: 14 KiB (fits WebGPU's default 16 KiB).
//
// Limits: headDim % 4 == 0 and headDim <= 4 * WG = 256; heads % kvHeads == 0;
// tokens <= 65535; the cache must still hold every past key a query can see:
// slots >= min(pos0, window - 1) with a window, slots >= pos0 without (checked by the wrapper).

// #include "chunk.wgsl"       Params (headBlocks = ceil(groupSize / HG)), bindings 0-6: p, q, kNew, vNew, kCache, vCache, out
// #include <kv_cache>         kvLoad, kvRound: kv_cache_f32.wgsl or kv_cache_f16.wgsl
// #include "softmax.wgsl"     the online softmax
// #include "group_sums.wgsl"  keyGroups, publishSums, groupsTotal

// WG and HG are set by index.ts from ATTENTION_TILES (one source for the wrapper's dispatch).
override WG: u32; // invocations per workgroup
// Query heads per workgroup; they share one KV head, so each key and value row read from
// memory serves HG heads. The four scores and weights of a key travel together as a vec4,
// so HG must be 4.
override HG: u32;
// Keys per invocation per tile, and keys per tile.
const KPL: u32 = 4u;
override TILE: u32 = KPL * WG;

var<workgroup> qShared: array<vec4<f32>, HG * WG>; // HG query heads, headDim / 4 chunks each
var<workgroup> laneMax: array<vec4<f32>, WG>; // per invocation: the maximum of its keys' scores
var<workgroup> probs: array<vec4<f32>, TILE>; // per key of the tile: exp(score - max) for each head
var<workgroup> exch: array<vec4<f32>, HG * WG>; // the key groups' sums at the end (group_sums.wgsl)
var<workgroup> sumShared: array<vec4<f32>, WG>;

// Where the query's keys are, set by the entry point before attend(): the cache rows from
// regionRow on (0; in a batched decode step its sequence's region, seq * slots), and the
// chunk's keys: position j >= chunkPos0 is row j - chunkPos0 + chunkRow0 of kNew / vNew.
var<private> regionRow: u32;
var<private> chunkPos0: u32;
var<private> chunkRow0: u32;

// Cache row of the tile's key i, given the slot of its first key. No modulo per key: a
// query never sees more than `slots` cached keys (checked by the wrapper), so neither does
// a tile, and one wrap is enough.
fn cacheRow(firstSlot: u32, i: u32) -> u32 {
  let slot = firstSlot + i;
  return regionRow + select(slot, slot - p.slots, slot >= p.slots);
}

// Scores of one key row (at vec4 offset `base`) against the workgroup's HG query heads.
// scoreCache and scoreNew are the same loop over two buffers: WGSL cannot pass a storage
// buffer to a function (pointer parameters in the storage space need the
// unrestricted_pointer_parameters extension), and choosing the buffer per chunk would put a
// branch in the innermost loop. The 4-key loop in main() is a third copy, unrolled over four
// cached keys so that each q chunk read from workgroup memory serves all four.
fn scoreCache(base: u32, chunks: u32) -> vec4<f32> {
  var d = vec4<f32>(0.0);
  for (var k = 0u; k < chunks; k++) {
    let key = kvLoad(kCache[base + k]);
    d += headDots(qShared[k], qShared[chunks + k], qShared[2u * chunks + k],
                  qShared[3u * chunks + k], key);
  }
  return d;
}

fn scoreNew(base: u32, chunks: u32) -> vec4<f32> {
  var d = vec4<f32>(0.0);
  for (var k = 0u; k < chunks; k++) {
    let key = kvRound(kNew[base + k]);
    d += headDots(qShared[k], qShared[chunks + k], qShared[2u * chunks + k],
                  qShared[3u * chunks + k], key);
  }
  return d;
}

// Score of the tile's key i (scaled), from the cache or the chunk; NEG_BIG past the tile's end.
fn scoreKey(i: u32, nPast: u32, inTile: u32, firstSlot: u32, first: u32, rowStride: u32,
            headOffset: u32, chunks: u32) -> vec4<f32> {
  if (i < nPast) {
    return scoreCache(cacheRow(firstSlot, i) * rowStride + headOffset, chunks) * p.scale;
  }
  if (i < inTile) {
    return scoreNew((first + i - chunkPos0 + chunkRow0) * rowStride + headOffset, chunks) * p.scale;
  }
  return vec4<f32>(NEG_BIG);
}

// A chunk of one sequence: token t = wid.y at position pos0 + t, in row row0 + t of the step's
// q / kNew / vNew / out, its past keys in the pool from row `region` on.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  regionRow = p.region;
  chunkPos0 = p.pos0;
  chunkRow0 = p.row0;
  attend(wid.x, p.row0 + wid.y, p.pos0 + wid.y, tid);
}

// A batched decode step (continuous batching): row t = row0 + wid.y is one token of its own sequence,
// at batchRows[t] = (pos, seq) (kernels/batch_rows.ts). Its past keys come from its sequence's
// region of the pool and its own key from row t of kNew / vNew, exactly as `main` decodes one
// token of one sequence: the same loop on the same numbers, so a row gets main's bits whatever
// else is in its step. Needs the step's keys written after it (kvWriteRows), as main.
@group(0) @binding(7) var<storage, read> batchRows: array<vec2<u32>>;
var<workgroup> rowShared: vec2<u32>;

@compute @workgroup_size(WG)
fn decode_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = p.row0 + wid.y;
  if (tid == 0u) {
    rowShared = batchRows[t];
  }
  // Through workgroupUniformLoad: the position bounds the tile loop, whose barriers need uniform control flow.
  let r = workgroupUniformLoad(&rowShared);
  regionRow = r.y * p.slots;
  chunkPos0 = r.x;
  chunkRow0 = t;
  attend(wid.x, t, r.x, tid);
}

// Query heads of block x for the query in row t of q / out, at absolute position pos.
fn attend(x: u32, t: u32, pos: u32, tid: u32) {
  let groupSize = p.heads / p.kvHeads;
  let g = x / p.headBlocks; // the KV head
  let h0 = g * groupSize + (x % p.headBlocks) * HG; // first query head of this workgroup
  let nh = min(HG, groupSize - (x % p.headBlocks) * HG); // how many of the HG are real
  let chunks = p.headDim / 4u;
  let lo = firstKey(pos, p.window);
  let count = pos + 1u - lo; // keys lo..pos

  // Heads h0 .. h0 + nh - 1 are contiguous in q's row; missing heads score zero (ignored).
  let qRow = (t * p.heads + h0) * chunks;
  for (var i = tid; i < HG * chunks; i += WG) {
    qShared[i] = select(vec4<f32>(0.0), q[qRow + i], i < nh * chunks);
  }
  workgroupBarrier();

  // V-phase role of this invocation (see header): chunks kg.c and kg.c2, key group kg.grp.
  let kg = keyGroups(chunks, tid);

  let rowStride = p.kvHeads * chunks; // vec4 chunks from one position to the next
  let headOffset = g * chunks;
  var m = vec4<f32>(NEG_BIG); // running maximum score per head, same in every invocation
  var sum = vec4<f32>(0.0); // this invocation's share of sum(exp(s - m)), per head
  var acc = HeadSums(); // this invocation's share of sum(exp(s - m) * v[c]), per head
  var bcc = HeadSums(); // the same for chunk c2

  let tiles = (count + TILE - 1u) / TILE;
  for (var tile = 0u; tile < tiles; tile++) {
    let first = lo + tile * TILE;
    let inTile = min(TILE, pos + 1u - first);
    // Keys [0, nPast) of the tile come from the cache, from slot firstSlot on (wrapping);
    // keys [nPast, inTile) from the current chunk, from row first + nPast - chunkPos0 + chunkRow0 on.
    var nPast = 0u;
    if (first < chunkPos0) {
      nPast = min(inTile, chunkPos0 - first);
    }
    let firstSlot = first % p.slots;

    // 1. Score this invocation's KPL keys (tid, tid + WG, ...) against the HG heads.
    var s0 = vec4<f32>(NEG_BIG);
    var s1 = vec4<f32>(NEG_BIG);
    var s2 = vec4<f32>(NEG_BIG);
    var s3 = vec4<f32>(NEG_BIG);
    if (tid + 3u * WG < nPast) {
      // All four from the cache (every full tile of decode): each q load serves four keys.
      let b0 = cacheRow(firstSlot, tid) * rowStride + headOffset;
      let b1 = cacheRow(firstSlot, tid + WG) * rowStride + headOffset;
      let b2 = cacheRow(firstSlot, tid + 2u * WG) * rowStride + headOffset;
      let b3 = cacheRow(firstSlot, tid + 3u * WG) * rowStride + headOffset;
      var d0 = vec4<f32>(0.0);
      var d1 = vec4<f32>(0.0);
      var d2 = vec4<f32>(0.0);
      var d3 = vec4<f32>(0.0);
      for (var k = 0u; k < chunks; k++) {
        let qa = qShared[k];
        let qb = qShared[chunks + k];
        let qc = qShared[2u * chunks + k];
        let qd = qShared[3u * chunks + k];
        let k0 = kvLoad(kCache[b0 + k]);
        let k1 = kvLoad(kCache[b1 + k]);
        let k2 = kvLoad(kCache[b2 + k]);
        let k3 = kvLoad(kCache[b3 + k]);
        d0 += headDots(qa, qb, qc, qd, k0);
        d1 += headDots(qa, qb, qc, qd, k1);
        d2 += headDots(qa, qb, qc, qd, k2);
        d3 += headDots(qa, qb, qc, qd, k3);
      }
      s0 = d0 * p.scale;
      s1 = d1 * p.scale;
      s2 = d2 * p.scale;
      s3 = d3 * p.scale;
    } else {
      s0 = scoreKey(tid, nPast, inTile, firstSlot, first, rowStride, headOffset, chunks);
      s1 = scoreKey(tid + WG, nPast, inTile, firstSlot, first, rowStride, headOffset, chunks);
      s2 = scoreKey(tid + 2u * WG, nPast, inTile, firstSlot, first, rowStride, headOffset, chunks);
      s3 = scoreKey(tid + 3u * WG, nPast, inTile, firstSlot, first, rowStride, headOffset, chunks);
    }
    laneMax[tid] = max(max(s0, s1), max(s2, s3));
    workgroupBarrier();

    // 2. New running maxima; rescale what was summed so far; publish this invocation's weights.
    let rescale = raiseMax(&m, tileMaxima(&laneMax, WG));
    let w0 = keyWeights(s0, m, tid < inTile);
    let w1 = keyWeights(s1, m, tid + WG < inTile);
    let w2 = keyWeights(s2, m, tid + 2u * WG < inTile);
    let w3 = keyWeights(s3, m, tid + 3u * WG < inTile);
    sum = sum * rescale + ((w0 + w1) + (w2 + w3));
    acc = rescaleSums(acc, rescale);
    bcc = rescaleSums(bcc, rescale);
    probs[tid] = w0;
    probs[tid + WG] = w1;
    probs[tid + 2u * WG] = w2;
    probs[tid + 3u * WG] = w3;
    workgroupBarrier();

    // 3. Weighted sum of this tile's values, for chunks c and c2, keys grp, grp + groups, ...
    if (kg.grp < kg.groups) {
      var i = kg.grp;
      for (; i < nPast; i += kg.groups) {
        let row = cacheRow(firstSlot, i) * rowStride + headOffset;
        let v = kvLoad(vCache[row + kg.c]);
        let u = kvLoad(vCache[row + kg.c2]);
        let pw = probs[i];
        acc = addWeighted(acc, pw, v);
        bcc = addWeighted(bcc, pw, u);
      }
      for (; i < inTile; i += kg.groups) {
        let row = (first + i - chunkPos0 + chunkRow0) * rowStride + headOffset;
        let v = kvRound(vNew[row + kg.c]);
        let u = kvRound(vNew[row + kg.c2]);
        let pw = probs[i];
        acc = addWeighted(acc, pw, v);
        bcc = addWeighted(bcc, pw, u);
      }
    }
  }

  // Combine: the p-sums of all invocations, the accumulators of all key groups; chunks c
  // first, then chunks c2 (workgroup memory holds one set at a time).
  sumShared[tid] = sum;
  publishSums(acc, tid);
  workgroupBarrier();
  var total = vec4<f32>(0.0);
  if (tid < kg.half) {
    for (var i = 0u; i < WG; i++) {
      total += sumShared[i];
    }
    for (var hh = 0u; hh < nh; hh++) {
      out[qRow + hh * chunks + tid] = groupsTotal(kg, hh, tid) / total[hh];
    }
  }
  workgroupBarrier();
  publishSums(bcc, tid);
  workgroupBarrier();
  if (tid + kg.half < chunks) {
    for (var hh = 0u; hh < nh; hh++) {
      out[qRow + hh * chunks + tid + kg.half] = groupsTotal(kg, hh, tid) / total[hh];
    }
  }
}
