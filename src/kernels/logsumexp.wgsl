// Row-wise log-sum-exp, so that log-probabilities can be reported with a top-k readout alone
// (logprob(j) = logits[j] - out[r]) instead of reading the whole vocabulary row back.
//
//   out[r] = m + log(sum_j exp(logits[r, j] - m)),  m = max_j logits[r, j]   (shifted: no overflow)
//
// Layouts: logits [rows, n] row-major f32; out [rows] f32.
// Dispatch: workgroups (rows, 1, 1), WG = 256 invocations each. Invocation i keeps a running
// (max, sum) over elements i, i + 256, ... of its row, rescaling its sum when the max grows
// (online softmax: x > m gives s = s * exp(m - x) + 1, m = x; otherwise s += exp(x - m)); then a
// tree reduction in workgroup memory combines pairs:
//   m = max(m1, m2),  s = s1 * exp(m1 - m) + s2 * exp(m2 - m).
// Limits: rows <= 65535; n >= 1; logits finite (the model's logits are; a NaN gives NaN).

struct Params {
  n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
// Below every finite logit: an invocation with no elements has (LOWEST, 0) and adds nothing.
const LOWEST: f32 = -3.4028234e38;
var<workgroup> maxOf: array<f32, WG>;
var<workgroup> sumOf: array<f32, WG>;

// The sum s1 (taken at max m1) expressed at max m >= m1; an empty sum stays 0 (never inf * 0).
fn rescale(s1: f32, m1: f32, m: f32) -> f32 {
  return select(0.0, s1 * exp(m1 - m), s1 > 0.0);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = wid.x * p.n;
  var m = LOWEST;
  var s = 0.0;
  for (var i = tid; i < p.n; i += WG) {
    let x = logits[row + i];
    if (x > m) {
      s = rescale(s, m, x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
  }
  maxOf[tid] = m;
  sumOf[tid] = s;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    if (tid < half) {
      let m1 = maxOf[tid];
      let m2 = maxOf[tid + half];
      let mm = max(m1, m2);
      sumOf[tid] = rescale(sumOf[tid], m1, mm) + rescale(sumOf[tid + half], m2, mm);
      maxOf[tid] = mm;
    }
    workgroupBarrier();
  }
  if (tid == 0u) {
    out[wid.x] = maxOf[0] + log(sumOf[0]);
  }
}
