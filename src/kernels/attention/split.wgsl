// Decode attention with the keys split across workgroups: strategy `split` ("flash-decoding").
// One query token (decode); prefill chunks run tiled.wgsl under both strategies. f32 math; the
// cache is f32 or f16 (the included <kv_cache> defines KvChunk and kvLoad; softmax.wgsl the
// pieces of the online softmax that the attention kernels share).
//
// Math: for query head h at position pos = pos0, KV head g = h / (heads / kvHeads),
// scale = 1 / sqrt(headDim), the visible keys lo..pos (lo = 0 without a window, else
// max(0, pos - window + 1)) are cut into `segments` consecutive segments of segLen keys
// (the last may be shorter; none is empty). Segment s, keys J_s, computes with its own maximum
//   m_s = max_{j in J_s} s_j,   l_s = sum_{j in J_s} exp(s_j - m_s),
//   o_s = sum_{j in J_s} exp(s_j - m_s) V[j, g, :]          (s_j = scale * q[h, :] . K[j, g, :])
// and the reduce entry point merges them exactly as one softmax over all keys:
//   M = max_s m_s,   out[h, :] = sum_s exp(m_s - M) o_s / sum_s exp(m_s - M) l_s.
// Key j < pos0 comes from the rolling cache, slot j % slots of the sequence's region (pool rows
// region ..); key pos0 (the query's own) from row row0 of kNew / vNew, which the caller writes
// to the cache only after attention.
//
// Layouts (row-major, read in chunks of 4 values): q, out [step rows, heads, headDim] f32, the
//   query in row row0; kNew, vNew [step rows, kvHeads, headDim] f32; kCache, vCache
//   [sequences * slots, kvHeads, headDim] in the cache's format; partO [segments, heads, headDim] f32 (o_s, unnormalised);
//   partML [segments, heads] vec2<f32> (m_s, l_s).
// Dispatch: `main`: workgroups (kvHeads * headBlocks, segments, 1) of WG invocations; a
//   workgroup serves the HG = 4 query heads h0 .. h0 + 3 of one KV head (headBlocks =
//   ceil(groupSize / HG) workgroups per KV head) over one segment, so each key and value read
//   serves 4 heads, as in tiled.wgsl. `reduce`: workgroups (heads, 1, 1) of WG, invocation c
//   merges chunk c of one head's output.
// The wrapper picks segments so that kvHeads * headBlocks * segments is about two workgroups
// per SM of a large GPU, and uses tiled.wgsl instead when the context is short.
//
// Per workgroup (online softmax over tiles of WG keys; WG = 64 in ATTENTION_TILES):
//  1. Scores, with LPK = 8 invocations per key row: in each of 8 steps, invocation i takes key
//     8 * step + i / 8 of the tile and the chunks i % 8, i % 8 + 8, ... of its row, so the 8
//     invocations of a key read 128 consecutive bytes (f32) at each step, as a GPU's memory
//     likes (one invocation walking a whole row would touch a different row per invocation).
//     Their partial dot products (4 heads in a vec4) meet in workgroup memory, where
//     invocation i adds up the 8 parts of key i and publishes the 4 scores.
//  2. Every invocation reads the WG scores to find the tile maxima (so the running maxima m
//     are identical in all invocations), turns them into weights exp(s - m), publishes its
//     key's weights and rescales what was summed so far by exp(m_old - m).
//  3. For the weighted sum of V, invocation i owns the value chunks c = i % H and c + H
//     (H = ceil(headDim / 8)) for the keys i / H, i / H + G, ... of the tile (G = WG / H key
//     groups): consecutive invocations read consecutive chunks of one value row.
//  At the end the key groups' accumulators and the weights' sums are added up in workgroup
//  memory and written to partO / partML.
//
// Three barriers per tile (parts, scores and weights live in separate arrays).
// Workgroup memory: 14.1 KiB (fits WebGPU's default 16 KiB).
// Limits: headDim % 4 == 0 and headDim <= 4 * WG = 256;
// heads % kvHeads == 0; segments <= 65535; the cache holds every past key the query sees
// (checked by the wrapper).

// #include <kv_cache>         KvChunk, kvLoad, kvRound: kv_cache_f32.wgsl or kv_cache_f16.wgsl
// #include "softmax.wgsl"     the online softmax
// #include "group_sums.wgsl"  keyGroups, publishSums, groupsTotal

struct Params {
  pos0: u32,
  heads: u32,
  kvHeads: u32,
  headDim: u32,
  slots: u32,
  window: u32,
  scale: f32,
  headBlocks: u32, // ceil(groupSize / HG): workgroups per KV head
  segments: u32,
  segLen: u32, // keys per segment
  row0: u32,   // the query's row in q, kNew, vNew and out (a step's rows hold several sequences)
  region: u32, // the sequence's first row of the KV-cache pool (seq * slots)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kNew: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vNew: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> kCache: array<KvChunk>;
@group(0) @binding(5) var<storage, read> vCache: array<KvChunk>;
@group(0) @binding(6) var<storage, read_write> partO: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> partML: array<vec2<f32>>;

// The reduce entry point's own bindings (an entry point's bindings must be distinct only
// among the variables it uses).
@group(0) @binding(1) var<storage, read> redO: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> redML: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

// WG and HG are set by index.ts from ATTENTION_TILES (one source for the wrapper's dispatch).
override WG: u32; // invocations per workgroup, and keys per tile
override HG: u32; // query heads per workgroup (sharing one KV head); their scores travel as a vec4, so 4

const LPK: u32 = 8u; // invocations per key row in the scoring phase
override PART_STRIDE: u32 = WG + 1u; // parts of one lane position, padded against bank conflicts

var<workgroup> qShared: array<vec4<f32>, HG * WG>; // HG query heads, headDim / 4 chunks each
var<workgroup> scores: array<vec4<f32>, WG>; // per key of the tile: its 4 heads' scores
var<workgroup> probs: array<vec4<f32>, WG>; // per key of the tile: exp(score - max) for each head
// Partial dot products [LPK][WG keys] while scoring; at the end, the accumulators [HG][WG]
// and then the sums [WG] of the invocations (the two uses never overlap in time).
var<workgroup> exch: array<vec4<f32>, LPK * PART_STRIDE>;
override SUMS: u32 = HG * WG; // offset of the sums in exch

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let groupSize = p.heads / p.kvHeads;
  let g = wid.x / p.headBlocks; // the KV head
  let h0 = g * groupSize + (wid.x % p.headBlocks) * HG; // first query head of this workgroup
  let nh = min(HG, groupSize - (wid.x % p.headBlocks) * HG); // how many of the HG are real
  let seg = wid.y;
  let chunks = p.headDim / 4u;
  let pos = p.pos0;
  let segFirst = firstKey(pos, p.window) + seg * p.segLen;
  let segEnd = min(segFirst + p.segLen, pos + 1u); // exclusive; > segFirst (wrapper's choice)

  for (var i = tid; i < HG * chunks; i += WG) {
    qShared[i] = select(vec4<f32>(0.0), q[(p.row0 * p.heads + h0) * chunks + i], i < nh * chunks);
  }
  workgroupBarrier();

  // V-phase role of this invocation (see header): chunks kg.c and kg.c2, key group kg.grp.
  let kg = keyGroups(chunks, tid);

  let rowStride = p.kvHeads * chunks; // chunks from one position to the next
  let headOffset = g * chunks;
  let lane = tid % LPK; // scoring role: first chunk of the key row this invocation reads
  var m = vec4<f32>(NEG_BIG); // running maximum per head, the same in every invocation
  var sum = vec4<f32>(0.0); // this invocation's share of sum(exp(s - m)), per head
  var acc = HeadSums(); // this invocation's share of sum(exp(s - m) * v[c]), per head
  var bcc = HeadSums(); // the same for chunk c2

  for (var first = segFirst; first < segEnd; first += WG) {
    let inTile = min(WG, segEnd - first);
    // Keys [0, nPast) of the tile come from the cache, from slot firstSlot on; a tile holds
    // at most `slots` cached keys (the wrapper checks the cache covers the window), so one
    // wrap is enough. Key pos0, if in the tile, is key nPast, from kNew.
    let nPast = min(inTile, select(0u, p.pos0 - first, first < p.pos0));
    let firstSlot = first % p.slots;

    // 1. Partial scores: this invocation's chunks of keys lane / LPK, + 8, + 16, ... (see header).
    for (var step = 0u; step < WG / LPK; step++) {
      let kt = step * (WG / LPK) + tid / LPK; // key of the tile
      var d = vec4<f32>(0.0);
      if (kt < nPast) {
        let slot = firstSlot + kt;
        let base = (p.region + select(slot, slot - p.slots, slot >= p.slots)) * rowStride + headOffset;
        for (var k = lane; k < chunks; k += LPK) {
          let key = kvLoad(kCache[base + k]);
          d += headDots(qShared[k], qShared[chunks + k], qShared[2u * chunks + k],
                        qShared[3u * chunks + k], key);
        }
      } else if (kt < inTile) {
        // The same loop over the other buffer (WGSL cannot pass a storage buffer to a function).
        for (var k = lane; k < chunks; k += LPK) {
          let key = kvRound(kNew[p.row0 * rowStride + headOffset + k]);
          d += headDots(qShared[k], qShared[chunks + k], qShared[2u * chunks + k],
                        qShared[3u * chunks + k], key);
        }
      }
      exch[lane * PART_STRIDE + kt] = d;
    }
    workgroupBarrier();
    // This invocation's key: the sum of its LPK parts; NEG_BIG past the tile's end.
    var d = vec4<f32>(0.0);
    for (var l = 0u; l < LPK; l++) {
      d += exch[l * PART_STRIDE + tid];
    }
    d = select(vec4<f32>(NEG_BIG), d * p.scale, tid < inTile);
    scores[tid] = d;
    workgroupBarrier();

    // 2. New running maxima; rescale what was summed so far; publish this key's weights.
    let rescale = raiseMax(&m, tileMaxima(&scores, WG));
    let w = keyWeights(d, m, tid < inTile);
    sum = sum * rescale + w;
    acc = rescaleSums(acc, rescale);
    bcc = rescaleSums(bcc, rescale);
    probs[tid] = w;
    workgroupBarrier();

    // 3. Weighted sum of this tile's values, for chunks c and c2, keys grp, grp + groups, ...
    if (kg.grp < kg.groups) {
      var i = kg.grp;
      for (; i < nPast; i += kg.groups) {
        let slot = firstSlot + i;
        let row = (p.region + select(slot, slot - p.slots, slot >= p.slots)) * rowStride + headOffset;
        let v = kvLoad(vCache[row + kg.c]);
        let u = kvLoad(vCache[row + kg.c2]);
        let pw = probs[i];
        acc = addWeighted(acc, pw, v);
        bcc = addWeighted(bcc, pw, u);
      }
      if (i < inTile) { // the query's own key (at most one per segment)
        let v = kvRound(vNew[p.row0 * rowStride + headOffset + kg.c]);
        let u = kvRound(vNew[p.row0 * rowStride + headOffset + kg.c2]);
        let pw = probs[i];
        acc = addWeighted(acc, pw, v);
        bcc = addWeighted(bcc, pw, u);
      }
    }
  }

  // Combine the key groups' accumulators and the invocations' sums; chunks c first, then c2.
  let part = seg * p.heads + h0; // partials row of head h0 in this segment
  // (exch held the last tile's parts, all read before that tile's second barrier.)
  exch[SUMS + tid] = sum;
  publishSums(acc, tid);
  workgroupBarrier();
  if (tid < nh) {
    var total = vec4<f32>(0.0);
    for (var i = 0u; i < WG; i++) {
      total += exch[SUMS + i];
    }
    partML[part + tid] = vec2<f32>(m[tid], total[tid]);
  }
  if (tid < kg.half) {
    for (var hh = 0u; hh < nh; hh++) {
      partO[(part + hh) * chunks + tid] = groupsTotal(kg, hh, tid);
    }
  }
  workgroupBarrier();
  publishSums(bcc, tid);
  workgroupBarrier();
  if (tid + kg.half < chunks) {
    for (var hh = 0u; hh < nh; hh++) {
      partO[(part + hh) * chunks + tid + kg.half] = groupsTotal(kg, hh, tid);
    }
  }
}

@compute @workgroup_size(WG)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let chunks = p.headDim / 4u;
  var mMax = NEG_BIG;
  for (var s = 0u; s < p.segments; s++) {
    mMax = max(mMax, redML[s * p.heads + h].x);
  }
  var total = 0.0;
  var o = vec4<f32>(0.0);
  let c = min(tid, chunks - 1u); // invocations past the last chunk compute it again, unused
  for (var s = 0u; s < p.segments; s++) {
    let ml = redML[s * p.heads + h];
    let e = exp(ml.x - mMax);
    total += e * ml.y;
    o += e * redO[(s * p.heads + h) * chunks + c];
  }
  if (tid < chunks) {
    out[(p.row0 * p.heads + h) * chunks + tid] = o / total;
  }
}
