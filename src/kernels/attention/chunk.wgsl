// The uniform Params and the bindings of the kernels that attend the tokens of one sequence's
// chunk, tiled.wgsl and flash.wgsl: index.ts dispatches both with the same Params (CHUNK_PARAMS)
// and the same buffers, so they are declared once, here, and included by both; not a kernel
// itself. The layouts are in each kernel's header.

// #include <kv_cache>    KvChunk: kv_cache_f32.wgsl or kv_cache_f16.wgsl

struct Params {
  tokens: u32,
  pos0: u32,
  heads: u32,
  kvHeads: u32,
  headDim: u32,
  slots: u32,
  window: u32,
  scale: f32,
  headBlocks: u32, // workgroups per KV head along x: ceil(groupSize / query heads per workgroup)
  row0: u32,       // the chunk's first row in q, kNew, vNew and out (a step's rows hold several sequences)
  region: u32,     // the sequence's first row of the KV-cache pool (seq * slots)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kNew: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vNew: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> kCache: array<KvChunk>;
@group(0) @binding(5) var<storage, read> vCache: array<KvChunk>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;
