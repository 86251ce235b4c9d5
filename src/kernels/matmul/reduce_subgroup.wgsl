// Cross-lane sum of the lanes kernels (matvec_lanes.wgsl, qmatvec_lanes.wgsl, fused_lanes.wgsl),
// plan `matvec=subgroup`: not a kernel itself; a wrapper binds it to their `<reduce>`. The kernel
// declares OUTPUTS, WG and `sums` (lanes.wgsl, or fused_lanes.wgsl itself).
// reduce_sums(lane) adds each of the OUTPUTS values of `sums` over the workgroup's WG lanes:
// subgroupAdd within each subgroup, then the subgroups' totals meet in workgroup memory, in
// subgroup order (deterministic). reduced(o) is output o's total, in every lane, afterwards.
// The subgroup size is whatever the device runs (builtins), never assumed: lavapipe's is 8,
// NVIDIA's 32; WebGPU allows 4 to 128, so at most WG / 4 subgroups.
// Needs the `subgroups` feature; call from uniform control flow.

enable subgroups;

struct Lane {
  @builtin(local_invocation_index) index: u32,
  @builtin(subgroup_invocation_id) sg_lane: u32,
  @builtin(subgroup_id) sg_id: u32,
  @builtin(num_subgroups) sg_count: u32,
}

// Totals in [0, OUTPUTS); subgroup s's sums in [OUTPUTS * (1 + s), OUTPUTS * (2 + s)).
var<workgroup> red: array<f32, OUTPUTS * (1u + WG / 4u)>;

fn reduce_sums(lane: Lane) {
  for (var o = 0u; o < OUTPUTS; o++) {
    let s = subgroupAdd(sums[o]);
    if (lane.sg_lane == 0u) {
      red[OUTPUTS * (1u + lane.sg_id) + o] = s;
    }
  }
  workgroupBarrier();
  if (lane.index < OUTPUTS) {
    var total = 0.0;
    for (var s = 0u; s < lane.sg_count; s++) {
      total += red[OUTPUTS * (1u + s) + lane.index];
    }
    red[lane.index] = total;
  }
  workgroupBarrier();
}

fn reduced(o: u32) -> f32 {
  return red[o];
}
