// Q4_1's decode (llama.cpp's block_q4_1, 20 bytes = 5 words, stored as the file has it:
// pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   word 0: d (low half), m (high half), f16;  words 1..4: 16 bytes of 4-bit codes, byte l
//   holding weight l (low nibble) and weight 16 + l (high nibble).
// w = d q + m; one block is one group.
// #include "group_spans.wgsl"  SPAN = 1: span_codes, Head, unit_head, span_dot

const UNIT_WORDS = 5u;
const UNIT_COLS = 32u;
const UNIT_TAIL_HALVES = 0u;
const HAS_OFFSET = true;

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + g * UNIT_WORDS;
  let dm = wd(m, at);
  var c: GroupCodes;
  for (var i = 0u; i < 4u; i++) {
    let word = wd(m, at + 1u + i);
    c.q[i] = bytes4(word & 0x0f0f0f0fu);
    c.q[4u + i] = bytes4((word >> 4u) & 0x0f0f0f0fu);
  }
  c.a = vec2<f32>(half_lo(dm));
  c.b = vec2<f32>(half_hi(dm));
  return c;
}
