// Q3_K's decode (llama.cpp's block_q3_K, 110 bytes, stored as the file has it and padded to
// 112 = 28 words: pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   words 0..7: hmask, 32 bytes: bit k of byte l is the third bit of weight 32k + l;
//   words 8..23: 64 bytes of low 2 bits in two halves of 32: byte l of half h holds weights
//   128h + 32j + l at bits 2j, 2j + 1;
//   words 24..26: 16 6-bit scales, s_j = (low 4 bits: nibble j / 8 of byte j % 8) | (high 2
//   bits: bits 2 (j / 4) of byte 8 + j % 4) << 4, less 32;  word 27: d (low half, f16).
// w = (d s_(i/16)) (q - 4), q = low | third << 2 (3 bits; llama.cpp subtracts 4 where the
// mask bit is clear, the same number).
// #include "group_spans.wgsl"  SPAN = 1: span_codes, Head, unit_head, span_dot

const UNIT_WORDS = 28u;
const UNIT_COLS = 256u;
const UNIT_TAIL_HALVES = 0u;
const HAS_OFFSET = false;

fn q3k_scale(m: ptr<storage, array<vec4<u32>>, read>, at: u32, j: u32) -> f32 {
  let lo = (byte_at(m, at + 24u, j % 8u) >> (4u * (j / 8u))) & 15u;
  let hi = (byte_at(m, at + 24u, 8u + j % 4u) >> (2u * (j / 4u))) & 3u;
  return f32(i32(lo | (hi << 4u)) - 32);
}

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + (g / 8u) * UNIT_WORDS;
  let k = g % 8u;
  let h = k / 4u;
  let j = k % 4u;
  var c: GroupCodes;
  for (var i = 0u; i < 8u; i++) {
    let low = (wd(m, at + 8u + 8u * h + i) >> (2u * j)) & 0x03030303u;
    let third = ((wd(m, at + i) >> k) & 0x01010101u) << 2u;
    c.q[i] = bytes4(low | third) - 4.0;
  }
  let d = half_lo(wd(m, at + 27u));
  c.a = vec2<f32>(d * q3k_scale(m, at, 2u * k), d * q3k_scale(m, at, 2u * k + 1u));
  c.b = vec2<f32>(0.0);
  return c;
}
