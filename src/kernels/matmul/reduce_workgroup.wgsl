// Cross-lane sum of the lanes kernels, plan `matvec=workgroup`: not a kernel itself; a wrapper
// binds it to their `<reduce>` (see reduce_subgroup.wgsl): the fallback without the `subgroups`
// feature. reduce_sums(lane) adds each of the OUTPUTS
// values of `sums` over the workgroup's WG lanes by a tree in workgroup memory (log2(WG)
// barriers); reduced(o) is output o's total, in every lane, afterwards.
// Workgroup memory: OUTPUTS * WG * 4 bytes (16 KiB at WG 128 with 32 outputs; index.ts checks
// the device limit).

struct Lane {
  @builtin(local_invocation_index) index: u32,
}

var<workgroup> red: array<f32, OUTPUTS * WG>;

fn reduce_sums(lane: Lane) {
  for (var o = 0u; o < OUTPUTS; o++) {
    red[o * WG + lane.index] = sums[o];
  }
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lane.index < stride) {
      for (var o = 0u; o < OUTPUTS; o++) {
        red[o * WG + lane.index] += red[o * WG + lane.index + stride];
      }
    }
    workgroupBarrier();
  }
}

fn reduced(o: u32) -> f32 {
  return red[o * WG];
}
