// Top-k of one row of logits on the device, so that sampling reads back k values, not the
// whole vocabulary.
//
//   outIds[0..k) = indices of the k largest logits[0..n), sorted by value descending, ties by
//   lower index first; outValues[i] = logits[outIds[i]].
//
// Layouts: logits [n] f32; outIds [k] u32; outValues [k] f32.
// Dispatch: a single workgroup of WG = 256 invocations: workgroups (1, 1, 1).
//
// Floats are first mapped to u32 keys that sort in the same order (flip all bits of
// negatives, set the sign bit of positives; -0 is treated as +0). Then:
//  1. Radix select: four passes of 8 bits each, from the top, narrow down the key of the k-th
//     largest element ("threshold"): a pass histograms the next byte of the keys that match the
//     prefix found so far, and walks the 256 bins from the top until k is reached.
//     Afterwards `greater` = number of keys > threshold (< k), and `ties` = k - greater
//     elements equal to the threshold must be taken, the lowest indices first.
//  2. Ordered compaction: invocation i owns a contiguous slice of the indices; it counts its
//     keys > threshold and = threshold, prefix sums of the counts give each invocation where
//     to write, and the ties are cut off after the first `ties` of them in index order.
//  3. Bitonic sort of the k selected (key, index) pairs, padded to a power of two, in
//     workgroup memory.
// Limits: 1 <= k <= min(n, MAX_K) (the sort buffer; MAX_K is set by topk.ts); NaN logits are not ordered.

struct Params {
  n: u32,
  k: u32,
  sortSize: u32, // next power of two >= k
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> outIds: array<u32>;
@group(0) @binding(3) var<storage, read_write> outValues: array<f32>;

const WG: u32 = 256u;
override MAX_K: u32; // sort buffer size, set by topk.ts

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> selection: vec2<u32>; // (bin chosen in this pass, keys above that bin)
var<workgroup> countGreater: array<u32, WG>;
var<workgroup> countEqual: array<u32, WG>;
var<workgroup> sortKeys: array<u32, MAX_K>;
var<workgroup> sortIds: array<u32, MAX_K>;

// Monotone map from f32 to u32: a < b as floats  <=>  key(a) < key(b) as integers.
fn sortKey(x: f32) -> u32 {
  var bits = bitcast<u32>(x);
  if (bits == 0x80000000u) {
    bits = 0u; // -0 ties with +0
  }
  if ((bits & 0x80000000u) != 0u) {
    return ~bits;
  }
  return bits | 0x80000000u;
}

// Whether (keyA, idA) comes before (keyB, idB) in the output: larger value, then lower index.
fn before(keyA: u32, idA: u32, keyB: u32, idB: u32) -> bool {
  return keyA > keyB || (keyA == keyB && idA < idB);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) tid: u32) {
  // 1. Radix select of the k-th largest key.
  var prefix = 0u; // the bits of the threshold found so far
  var prefixMask = 0u; // which bits those are
  var remaining = p.k; // how many of the keys matching the prefix are still to be taken
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    for (var b = tid; b < 256u; b += WG) {
      atomicStore(&histogram[b], 0u);
    }
    workgroupBarrier();
    for (var i = tid; i < p.n; i += WG) {
      let key = sortKey(logits[i]);
      if ((key & prefixMask) == prefix) {
        atomicAdd(&histogram[(key >> shift) & 255u], 1u);
      }
    }
    workgroupBarrier();
    if (tid == 0u) {
      var above = 0u;
      var bin = 255u;
      loop {
        let c = atomicLoad(&histogram[bin]);
        if (above + c >= remaining || bin == 0u) {
          break;
        }
        above += c;
        bin -= 1u;
      }
      selection = vec2<u32>(bin, above);
    }
    let chosen = workgroupUniformLoad(&selection);
    prefix |= chosen.x << shift;
    prefixMask |= 255u << shift;
    remaining -= chosen.y;
  }
  let threshold = prefix;
  let ties = remaining; // keys equal to the threshold that belong to the top k
  let greater = p.k - ties;

  // 2. Ordered compaction into sortKeys/sortIds[0..k).
  let slice = (p.n + WG - 1u) / WG;
  let begin = min(tid * slice, p.n);
  let end = min(begin + slice, p.n);
  var nGreater = 0u;
  var nEqual = 0u;
  for (var i = begin; i < end; i++) {
    let key = sortKey(logits[i]);
    nGreater += select(0u, 1u, key > threshold);
    nEqual += select(0u, 1u, key == threshold);
  }
  countGreater[tid] = nGreater;
  countEqual[tid] = nEqual;
  workgroupBarrier();
  var outGreater = 0u; // where this slice's keys > threshold go
  var tieRank = 0u; // how many ties lie in earlier slices
  for (var s = 0u; s < tid; s++) {
    outGreater += countGreater[s];
    tieRank += countEqual[s];
  }
  for (var i = begin; i < end; i++) {
    let key = sortKey(logits[i]);
    if (key > threshold) {
      sortKeys[outGreater] = key;
      sortIds[outGreater] = i;
      outGreater++;
    } else if (key == threshold) {
      if (tieRank < ties) {
        sortKeys[greater + tieRank] = key;
        sortIds[greater + tieRank] = i;
      }
      tieRank++;
    }
  }
  // Padding up to the power of two sorts last: only a NaN (bits 0xffffffff) has key 0, and
  // index 0xffffffff loses every tie.
  for (var i = p.k + tid; i < p.sortSize; i += WG) {
    sortKeys[i] = 0u;
    sortIds[i] = 0xffffffffu;
  }
  workgroupBarrier();

  // 3. Bitonic sort of sortSize entries into `before` order.
  for (var size = 2u; size <= p.sortSize; size *= 2u) {
    for (var stride = size / 2u; stride > 0u; stride /= 2u) {
      for (var pair = tid; pair < p.sortSize / 2u; pair += WG) {
        let a = (pair / stride) * 2u * stride + pair % stride;
        let b = a + stride;
        // Blocks of `size` alternate direction so that each pair of them forms a bitonic sequence.
        let forward = (a & size) == 0u;
        let ka = sortKeys[a];
        let ia = sortIds[a];
        let kb = sortKeys[b];
        let ib = sortIds[b];
        if (before(kb, ib, ka, ia) == forward) {
          sortKeys[a] = kb;
          sortIds[a] = ib;
          sortKeys[b] = ka;
          sortIds[b] = ia;
        }
      }
      workgroupBarrier();
    }
  }

  for (var i = tid; i < p.k; i += WG) {
    outIds[i] = sortIds[i];
    outValues[i] = logits[sortIds[i]];
  }
}
