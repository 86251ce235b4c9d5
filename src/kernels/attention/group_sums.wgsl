// The key groups of the 4-head kernels whose invocations sum a tile's values in groups of keys
// (tiled.wgsl, split.wgsl): each invocation's part (keyGroups), and the last step, where each
// holds its group's sums of a value chunk for the 4 heads (a HeadSums, softmax.wgsl) and a
// chunk's groups are added up through workgroup memory, in group order. Included by both; not a
// kernel itself. A kernel that includes it declares `override WG` and `var<workgroup> exch`, an
// array of at least 4 * WG vec4<f32> that holds nothing else while the sums pass through it.

// #include "softmax.wgsl"    HeadSums

// An invocation's part in the weighted sum of a tile's values: value chunks c and c2 = c + half
// (half = ceil(chunks / 2); with an odd number of chunks the last lanes' c2 repeats c, and their
// second result is never written) of the keys grp, grp + groups, ... of the tile, in
// groups = WG / half key groups.
struct KeyGroups {
  half: u32,
  c: u32,
  c2: u32,
  groups: u32,
  grp: u32,
}

fn keyGroups(chunks: u32, tid: u32) -> KeyGroups {
  let half = (chunks + 1u) / 2u;
  let c = tid % half;
  return KeyGroups(half, c, select(c, c + half, c + half < chunks), WG / half, tid / half);
}

// Puts this invocation's sums where groupsTotal reads them: head hh's at exch[hh * WG + tid].
fn publishSums(a: HeadSums, tid: u32) {
  exch[tid] = a.head0;
  exch[WG + tid] = a.head1;
  exch[2u * WG + tid] = a.head2;
  exch[3u * WG + tid] = a.head3;
}

// Head hh's sum of the chunk that invocations tid, tid + kg.half, ... hold (one per key group),
// over the key groups in group order.
fn groupsTotal(kg: KeyGroups, hh: u32, tid: u32) -> vec4<f32> {
  var o = vec4<f32>(0.0);
  for (var k = 0u; k < kg.groups; k++) {
    o += exch[hh * WG + k * kg.half + tid];
  }
  return o;
}
