// The two small products of a LoRA update, applied beside a projection y = x W^T
// without merging B A into W (so one base model serves any number of adapters):
//
//   product:  y[t, r] = (accumulate ? y[t, r] : 0) + scale * sum_c x[t, c] * m[r, c]
//
//   down  u  = x A^T               m = lora_A.weight [rank, in_features],  scale 1
//   up    y += scale * u B^T       m = lora_B.weight [out_features, rank], scale = alpha / r
//                                  (or alpha / sqrt(r), rsLoRA)
//
// Layouts: x f32 [tokens, cols] row-major; m f32 [rows, cols] row-major (Hugging Face layout
// [out_features, in_features], widened to f32 at load: adapters are small); y f32
// [tokens, rows] row-major. y may not alias x.
//
// The two halves have opposite shapes, so there are two entry points:
//   wide    for lora_A: few rows (the rank), long dots (in_features). One workgroup of WG
//           invocations per output (r, t): lane l sums columns l, l + WG, ..., the WG partial
//           sums meet in a tree reduction in workgroup memory. Dispatch (rows, tokens).
//   narrow  for lora_B: many rows, dots of only `rank` terms. One invocation per output,
//           WG consecutive rows per workgroup. Dispatch (ceil(rows / WG), tokens).
// Limits: rows (wide) and tokens at most maxComputeWorkgroupsPerDimension (65535).

struct Params {
  rows: u32,        // rows of m = columns of y
  cols: u32,        // columns of m = columns of x
  tokens: u32,
  accumulate: u32,  // 1: y += ..., 0: y = ...
  scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

fn store(t: u32, r: u32, sum: f32) {
  let i = t * p.rows + r;
  if (p.accumulate == 1u) {
    y[i] = y[i] + p.scale * sum;
  } else {
    y[i] = p.scale * sum;
  }
}

@compute @workgroup_size(WG)
fn wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let r = wid.x;
  let t = wid.y;
  let xRow = t * p.cols;
  let mRow = r * p.cols;
  var sum = 0.0;
  for (var c = lane; c < p.cols; c += WG) {
    sum += x[xRow + c] * m[mRow + c];
  }
  partial[lane] = sum;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lane < stride) {
      partial[lane] += partial[lane + stride];
    }
    workgroupBarrier();
  }
  if (lane == 0u) {
    store(t, r, partial[0]);
  }
}

@compute @workgroup_size(WG)
fn narrow(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  let t = gid.y;
  if (r >= p.rows) {
    return;
  }
  let xRow = t * p.cols;
  let mRow = r * p.cols;
  var sum = 0.0;
  for (var c = 0u; c < p.cols; c++) {
    sum += x[xRow + c] * m[mRow + c];
  }
  store(t, r, sum);
}
