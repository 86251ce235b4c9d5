// Q5_0's decode (llama.cpp's block_q5_0, 22 bytes; re-packed two blocks to a 44-byte unit of
// 11 words: pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   word 0: d of the unit's first block (low half) and second (high half), f16;
//   words 1, 2: qh of each block (bit j the fifth bit of weight j);
//   words 3..6, 7..10: each block's low 4 bits, byte l holding weight l (low nibble) and
//   16 + l (high nibble).
// w = d (q - 16); one block is one group.
// #include "group_spans.wgsl"  SPAN = 1: span_codes, Head, unit_head, span_dot

const UNIT_WORDS = 11u;
const UNIT_COLS = 64u;
const UNIT_TAIL_HALVES = 0u;
const HAS_OFFSET = false;

// The fifth bits of weights 4i .. 4i + 3, moved to bit 4 of bytes 0..3.
fn high_bits4(qh: u32, i: u32) -> u32 {
  let b = (qh >> (4u * i)) & 15u;
  return ((b * 0x00204081u) & 0x01010101u) << 4u;
}

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + (g / 2u) * UNIT_WORDS;
  let odd = g % 2u;
  let dd = wd(m, at);
  let qh = wd(m, at + 1u + odd);
  var c: GroupCodes;
  for (var i = 0u; i < 4u; i++) {
    let word = wd(m, at + 3u + 4u * odd + i);
    c.q[i] = bytes4((word & 0x0f0f0f0fu) | high_bits4(qh, i)) - 16.0;
    c.q[4u + i] = bytes4(((word >> 4u) & 0x0f0f0f0fu) | high_bits4(qh, 4u + i)) - 16.0;
  }
  c.a = vec2<f32>(select(half_lo(dd), half_hi(dd), odd == 1u));
  c.b = vec2<f32>(0.0);
  return c;
}
