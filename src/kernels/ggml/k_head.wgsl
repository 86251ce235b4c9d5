// Q4_K's and Q5_K's block head, the same 16 bytes in both (d, dmin, then the 6-bit scales and
// mins k_scale_min reads, ggml.wgsl), as their decode files' lavapipe decode products keep it:
// included by ggml/q4_k.wgsl and ggml/q5_k.wgsl, not a kernel itself.

// The decode products keep a block's first 16 bytes (d, dmin, the scales and mins) per row for
// its 4 spans, d and dmin decoded: one vec4 load per block, as qmatvec_rows.wgsl loads a vec4
// of scales per 8 groups.
struct Head {
  words: vec4<u32>,
  d: f32,
  dmin: f32,
}

fn unit_head(m: ptr<storage, array<vec4<u32>>, read>, row: u32, u: u32) -> Head {
  let v = (*m)[(row + u * UNIT_WORDS) / 4u];
  return Head(v, half_lo(v.x), half_hi(v.x));
}

// Chunk c's two (d sc, dmin m) pairs, without branches: all four 6-bit fields of a byte lane at
// once, the chunk's two bytes picked by shifts (k_scale_min, one field at a time, for the rest).
fn chunk_scales(head: Head, c: u32) -> vec4<f32> {
  let hd = head.words;
  let hi = c >= 2u;
  let sc = select(hd.y & 0x3f3f3f3fu, (hd.w & 0x0f0f0f0fu) | ((hd.y >> 2u) & 0x30303030u), hi) >> (16u * (c % 2u));
  let mn = select(hd.z & 0x3f3f3f3fu, ((hd.w >> 4u) & 0x0f0f0f0fu) | ((hd.z >> 2u) & 0x30303030u), hi) >> (16u * (c % 2u));
  return vec4<f32>(head.d * f32(sc & 255u), head.d * f32((sc >> 8u) & 255u), head.dmin * f32(mn & 255u), head.dmin * f32((mn >> 8u) & 255u));
}
