// The activation of Mistral's MLP on its own, for layers whose gate_proj or up_proj carries
// a LoRA adapter (the fused matmulSwiGLU cannot add the adapter's update before the silu):
//
//   gate[i] = silu(gate[i]) * up[i],   silu(g) = g / (1 + e^-g)
//
// Layouts: gate, up f32 [n] (a [tokens, intermediate_size] block, row-major); the result
// overwrites gate. Dispatch: ceil(n / WG) workgroups, one invocation per element
// (n / WG is at most 65535 * 64 elements: 128 tokens x 14336 is 28672 workgroups).

struct Params {
  n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.n) {
    return;
  }
  let g = gate[i];
  gate[i] = g / (1.0 + exp(-g)) * up[i];
}
