// KV-cache storage format f16, shared by the kernels that read or write the cache (attention,
// kv_write): not a kernel itself. They include `<kv_cache>`, which the wrapper binds to this file
// or kv_cache_f32.wgsl (kv_cache.ts), so every kernel body is written once for both formats.
//
// The cache [slots, kvHeads, headDim] is addressed in chunks of 4 consecutive values:
// one KvChunk = two u32 words, each holding two IEEE halves, low half first (little-endian),
// so the byte layout is a plain row-major f16 array. Values are stored as f16 and all math is
// f32: pack2x16float / unpack2x16float are core WGSL and need no `shader-f16` feature (which
// Dawn hides on NVIDIA's Vulkan driver). pack2x16float rounds to a nearest f16 (round to
// nearest even on lavapipe; WGSL allows either neighbour); values beyond f16's range (65504)
// are undefined, far above what keys and values of a trained model reach.

alias KvChunk = vec2<u32>;

fn kvLoad(c: KvChunk) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(c.x), unpack2x16float(c.y));
}

fn kvStore(v: vec4<f32>) -> KvChunk {
  return vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
}

// A key or value of the step's own rows as the cache will hold it: attention reads those from
// kNew / vNew (they are written after it), rounded alike, so a token's result does not depend
// on whether its keys arrived in its own chunk or an earlier one (a prompt's chunking).
// (Not kvLoad(kvStore(v)): Mesa 25.0's llvmpipe folds that pair and leaves every second value
// unrounded.) quantizeToF16 may flush f16 subnormals to zero (WGSL allows it, llvmpipe does)
// while pack2x16float keeps them, so below f16's smallest normal, 2^-14, the value is rounded
// to the subnormals' fixed step 2^-24 here: scaling by 2^24 is exact and round() ties to even,
// as the store does.
fn kvRound(v: vec4<f32>) -> vec4<f32> {
  let subnormal = round(v * 16777216.0) * (1.0 / 16777216.0);
  return select(quantizeToF16(v), subnormal, abs(v) < vec4<f32>(1.0 / 16384.0));
}
