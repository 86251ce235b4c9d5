// KV-cache write: appends a chunk's keys and values to the rolling cache.
//
//   kCache[(pos0 + t) % slots, :] = kNew[t, :]    and the same for v,
// for the last min(tokens, slots) rows t of the chunk (earlier rows would be overwritten
// by later ones in the same slot anyway, and skipping them keeps the result independent
// of the order in which workgroups run).
//
// Layouts (row-major f32): kNew, vNew [tokens, rowLen]; kCache, vCache [slots, rowLen],
// rowLen = kvHeads * headDim.
// Dispatch: workgroups (ceil(rowLen / 64), rowsWritten, 1) with rowsWritten = min(tokens, slots);
// workgroup y copies chunk row firstRow + y. Limits: rowsWritten <= 65535.

struct Params {
  rowLen: u32,
  firstRow: u32, // tokens - rowsWritten
  pos0: u32,
  slots: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kNew: array<f32>;
@group(0) @binding(2) var<storage, read> vNew: array<f32>;
@group(0) @binding(3) var<storage, read_write> kCache: array<f32>;
@group(0) @binding(4) var<storage, read_write> vCache: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.rowLen) {
    return;
  }
  let t = p.firstRow + gid.y;
  let slot = (p.pos0 + t) % p.slots;
  kCache[slot * p.rowLen + i] = kNew[t * p.rowLen + i];
  vCache[slot * p.rowLen + i] = vNew[t * p.rowLen + i];
}
