// KV-cache write: appends a chunk's keys and values to the rolling cache.
//
//   kCache[(pos0 + t) % slots, :] = kNew[t, :]    and the same for v,
// for the last min(tokens, slots) rows t of the chunk (earlier rows would be overwritten
// by later ones in the same slot anyway, and skipping them keeps the result independent
// of the order in which workgroups run). With an f16 cache each value is rounded to a
// nearest f16 on the way in (kvStore, kv_cache_f16.wgsl).
//
// Layouts: kNew, vNew [tokens, rowLen] f32, read as vec4; kCache, vCache [slots, rowLen] in
// the cache's format (<kv_cache>: kv_cache_f32.wgsl or kv_cache_f16.wgsl), as KvChunk of 4 values;
// rowLen = kvHeads * headDim, a multiple of 4; rowChunks = rowLen / 4.
// Dispatch: workgroups (ceil(rowChunks / WG), rowsWritten, 1) of WG invocations (override, set
// from TILES in kv_write.ts) with rowsWritten = min(tokens, slots);
// workgroup y copies chunk row firstRow + y, one invocation per 4 values.
// Limits: rowsWritten <= 65535.
//
// Entry point `batch_rows` (batched steps, continuous batching): row t of the step goes to its own
// sequence's region of the pool, kCache[seq_t * slots + pos_t % slots, :] = kNew[t, :], with
// (pos_t, seq_t) = batchRows[t] (kernels/batch_rows.ts; no two rows share a cache row, which
// writeBatchRows guarantees). Dispatch: (ceil(rowChunks / WG), tokens, 1); firstRow and pos0
// are unused.

// #include <kv_cache>    KvChunk, kvStore

struct Params {
  rowChunks: u32,
  firstRow: u32, // tokens - rowsWritten
  pos0: u32,
  slots: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kNew: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> vNew: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> kCache: array<KvChunk>;
@group(0) @binding(4) var<storage, read_write> vCache: array<KvChunk>;
@group(0) @binding(5) var<storage, read> batchRows: array<vec2<u32>>; // `batch_rows` only

override WG: u32;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.rowChunks) {
    return;
  }
  let t = p.firstRow + gid.y;
  let slot = (p.pos0 + t) % p.slots;
  kCache[slot * p.rowChunks + i] = kvStore(kNew[t * p.rowChunks + i]);
  vCache[slot * p.rowChunks + i] = kvStore(vNew[t * p.rowChunks + i]);
}

@compute @workgroup_size(WG)
fn batch_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.rowChunks) {
    return;
  }
  let t = gid.y;
  let r = batchRows[t];
  let slot = r.y * p.slots + r.x % p.slots;
  kCache[slot * p.rowChunks + i] = kvStore(kNew[t * p.rowChunks + i]);
  vCache[slot * p.rowChunks + i] = kvStore(vNew[t * p.rowChunks + i]);
}
