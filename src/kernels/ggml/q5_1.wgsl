// Q5_1's decode (llama.cpp's block_q5_1, 24 bytes = 6 words, stored as the file has it:
// pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   word 0: d (low half), m (high half), f16;  word 1: qh, bit j the fifth bit of weight j;
//   words 2..5: the low 4 bits, byte l holding weight l (low nibble) and 16 + l (high nibble).
// w = d q + m; one block is one group.
// #include "group_spans.wgsl"  SPAN = 1: span_codes, Head, unit_head, span_dot

const UNIT_WORDS = 6u;
const UNIT_COLS = 32u;
const UNIT_TAIL_HALVES = 0u;
const HAS_OFFSET = true;

// The fifth bits of weights 4i .. 4i + 3, moved to bit 4 of bytes 0..3.
fn high_bits4(qh: u32, i: u32) -> u32 {
  let b = (qh >> (4u * i)) & 15u;
  return ((b * 0x00204081u) & 0x01010101u) << 4u;
}

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + g * UNIT_WORDS;
  let dm = wd(m, at);
  let qh = wd(m, at + 1u);
  var c: GroupCodes;
  for (var i = 0u; i < 4u; i++) {
    let word = wd(m, at + 2u + i);
    c.q[i] = bytes4((word & 0x0f0f0f0fu) | high_bits4(qh, i));
    c.q[4u + i] = bytes4(((word >> 4u) & 0x0f0f0f0fu) | high_bits4(qh, 4u + i));
  }
  c.a = vec2<f32>(half_lo(dm));
  c.b = vec2<f32>(half_hi(dm));
  return c;
}
