// KV-cache storage format f32, shared by the kernels that read or write the cache (attention,
// kv_write): not a kernel itself. The wrapper prepends this file or kv_cache_f16.wgsl (WGSL has
// no #include), so every kernel body is written once for both formats.
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
