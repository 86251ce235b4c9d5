// RMSNorm (Hugging Face MistralRMSNorm), f32 throughout.
//
//   y[t, i] = x[t, i] / sqrt(mean_i(x[t, i]^2) + eps) * weight[i]
//
// Layouts: x, y [tokens, dim] row-major f32; weight [dim] f32. y may not alias x.
// Dispatch: one workgroup of WG = 64 invocations per token: workgroups (tokens, 1, 1).
// Each invocation sums the squares of a strided slice of the row, the 64 partial
// sums are combined by a tree reduction in workgroup memory, then every invocation
// scales its slice. Limits: any dim >= 1; tokens <= 65535 (one dispatch dimension).

struct Params {
  dim: u32,
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = wid.x * p.dim;

  var sumSq = 0.0;
  for (var i = tid; i < p.dim; i += WG) {
    let v = x[row + i];
    sumSq += v * v;
  }
  partial[tid] = sumSq;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (tid < stride) {
      partial[tid] += partial[tid + stride];
    }
    workgroupBarrier();
  }

  let invRms = 1.0 / sqrt(partial[0] / f32(p.dim) + p.eps);
  for (var i = tid; i < p.dim; i += WG) {
    y[row + i] = x[row + i] * invRms * weight[i];
  }
}
