// KV-cache storage format f32, shared by the kernels that read or write the cache (attention,
// kv_write): not a kernel itself. They include `<kv_cache>`, which the wrapper binds to this file
// or kv_cache_f16.wgsl (kv_cache.ts), so every kernel body is written once for both formats.
//
// The cache [slots, kvHeads, headDim] is addressed in chunks of 4 consecutive values:
// one KvChunk = one vec4<f32> here.

alias KvChunk = vec4<f32>;

fn kvLoad(c: KvChunk) -> vec4<f32> {
  return c;
}

fn kvStore(v: vec4<f32>) -> KvChunk {
  return v;
}

// A key or value of the step's own rows as the cache will hold it: attention reads those from
// kNew / vNew (they are written after it), rounded alike, so a token's result does not depend
// on whether its keys arrived in its own chunk or an earlier one (a prompt's chunking).
fn kvRound(v: vec4<f32>) -> vec4<f32> {
  return v;
}
