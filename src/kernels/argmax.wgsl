// Row-wise argmax, for greedy decoding on the device (only one u32 per row is read back).
//
//   out[r] = the smallest i < n with logits[r, i] = max_k logits[r, k]
//
// Layouts: logits [rows, n] row-major f32; out [rows] u32.
// Dispatch: workgroups (rows, 1, 1), WG = 64 invocations each. Invocation i scans elements
// i, i + 64, ... of its row (ascending, so a strict > keeps the lowest index of a tie), then
// the 64 candidates are reduced in workgroup memory comparing (value, then lower index).
// Limits: rows <= 65535; n >= 1; NaN logits are not ordered (results with NaNs are unspecified).

struct Params {
  n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 64u;
var<workgroup> bestValue: array<f32, WG>;
var<workgroup> bestIndex: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = wid.x * p.n;
  // Start from the first element this invocation owns (if any) rather than a sentinel value,
  // so that rows of -infinity or -FLT_MAX still produce an index.
  var value = logits[row + min(tid, p.n - 1u)];
  var index = min(tid, p.n - 1u);
  for (var i = tid + WG; i < p.n; i += WG) {
    let v = logits[row + i];
    if (v > value) {
      value = v;
      index = i;
    }
  }
  bestValue[tid] = value;
  bestIndex[tid] = index;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (tid < stride) {
      let v = bestValue[tid + stride];
      let j = bestIndex[tid + stride];
      if (v > bestValue[tid] || (v == bestValue[tid] && j < bestIndex[tid])) {
        bestValue[tid] = v;
        bestIndex[tid] = j;
      }
    }
    workgroupBarrier();
  }
  if (tid == 0u) {
    out[wid.x] = bestIndex[0];
  }
}
