// Q2_K's decode (llama.cpp's block_q2_K, 84 bytes = 21 words, stored as the file has it:
// pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   words 0..3: 16 scale bytes, one per 16 weights: low nibble sc, high nibble m;
//   words 4..19: 64 bytes of 2-bit codes in two halves of 32: byte l of half h holds weights
//   128h + 32j + l at bits 2j, 2j + 1 (j = 0..3);  word 20: d (low half), dmin (high half).
// w = (d sc) q - dmin m per 16 weights.
// #include "group_spans.wgsl"  SPAN = 1: span_codes, Head, unit_head, span_dot

const UNIT_WORDS = 21u;
const UNIT_COLS = 256u;
const UNIT_TAIL_HALVES = 0u;
const HAS_OFFSET = true;

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + (g / 8u) * UNIT_WORDS;
  let k = g % 8u;
  let h = k / 4u;
  let j = k % 4u;
  var c: GroupCodes;
  for (var i = 0u; i < 8u; i++) {
    c.q[i] = bytes4((wd(m, at + 4u + 8u * h + i) >> (2u * j)) & 0x03030303u);
  }
  // Sub-blocks 2k, 2k + 1: scale bytes 2k, 2k + 1.
  let s = wd(m, at + k / 2u) >> (16u * (k % 2u));
  let dd = wd(m, at + 20u);
  let d = half_lo(dd);
  let dmin = half_hi(dd);
  c.a = vec2<f32>(d * f32(s & 15u), d * f32((s >> 8u) & 15u));
  c.b = vec2<f32>(-(dmin * f32((s >> 4u) & 15u)), -(dmin * f32((s >> 12u) & 15u)));
  return c;
}
