// Q6_K's decode (llama.cpp's block_q6_K, 210 bytes, stored as the file has it and padded to 212
// = 53 words: pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   words 0..31: ql, 128 bytes of low 4 bits, two halves of 64 bytes: byte l of half h holds
//     weight 128h + l (low nibble) and 128h + 64 + l (high nibble), l < 64;
//   words 32..47: qh, 64 bytes of high 2 bits, two halves of 32: byte l of half h holds weights
//     128h + 32j + l at bits 2j, 2j + 1 (j = 0..3);
//   words 48..51: 16 int8 scales, one per 16 weights;  word 52: d (low half, f16).
// w = (d sc_(i/16)) (q - 32), q = ql | qh << 4 (6 bits).
// A word of ql masked and a word of qh shifted into bits 4..5 make four 6-bit codes at once.

const UNIT_WORDS = 53u;
const UNIT_COLS = 256u;
const HAS_OFFSET = false;
// A span is a half block: its 4 groups share their ql and qh words.
const SPAN = 4u;

fn i8_of(b: u32) -> f32 {
  return f32(bitcast<i32>(b << 24u) >> 24u);
}

// Group j (0..3) of a half from its words: ql words 8 (j & 1) .. of the half, qh words 0..7.
fn q6k_codes(d: f32, sc: vec2<u32>, ql: array<u32, 16>, qh: array<u32, 8>, j: u32) -> GroupCodes {
  var c: GroupCodes;
  let lo_shift = 4u * (j / 2u);
  for (var i = 0u; i < 8u; i++) {
    let word = ((ql[8u * (j % 2u) + i] >> lo_shift) & 0x0f0f0f0fu) | (((qh[i] >> (2u * j)) & 0x03030303u) << 4u);
    c.q[i] = bytes4(word) - 32.0;
  }
  c.a = vec2<f32>(d * i8_of(sc.x), d * i8_of(sc.y));
  c.b = vec2<f32>(0.0);
  return c;
}

// Scales 2j, 2j + 1 of half h (int8 bytes 8h + 2j, + 1 of the 16 at word 48).
fn q6k_scales(m: ptr<storage, array<vec4<u32>>, read>, at: u32, h: u32, j: u32) -> vec2<u32> {
  let word = wd(m, at + 48u + 2u * h + j / 2u) >> (16u * (j % 2u));
  return vec2<u32>(word & 255u, (word >> 8u) & 255u);
}

fn q6k_ql(m: ptr<storage, array<vec4<u32>>, read>, at: u32) -> array<u32, 16> {
  var v: array<u32, 16>;
  for (var i = 0u; i < 16u; i++) {
    v[i] = wd(m, at + i);
  }
  return v;
}

fn q6k_qh(m: ptr<storage, array<vec4<u32>>, read>, at: u32) -> array<u32, 8> {
  var v: array<u32, 8>;
  for (var i = 0u; i < 8u; i++) {
    v[i] = wd(m, at + i);
  }
  return v;
}

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + (g / 8u) * UNIT_WORDS;
  let h = (g % 8u) / 4u;
  let j = g % 4u;
  // Only the 8 ql words of this group are read (the others of the array stay zero).
  var ql: array<u32, 16>;
  for (var i = 0u; i < 8u; i++) {
    ql[8u * (j % 2u) + i] = wd(m, at + 16u * h + 8u * (j % 2u) + i);
  }
  let d = half_lo(wd(m, at + 52u));
  return q6k_codes(d, q6k_scales(m, at, h, j), ql, q6k_qh(m, at + 32u + 8u * h), j);
}

fn span_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32) -> array<GroupCodes, SPAN> {
  let at = row + (sp / 2u) * UNIT_WORDS;
  let h = sp % 2u;
  let ql = q6k_ql(m, at + 16u * h);
  let qh = q6k_qh(m, at + 32u + 8u * h);
  let d = half_lo(wd(m, at + 52u));
  return array<GroupCodes, SPAN>(
    q6k_codes(d, q6k_scales(m, at, h, 0u), ql, qh, 0u), q6k_codes(d, q6k_scales(m, at, h, 1u), ql, qh, 1u),
    q6k_codes(d, q6k_scales(m, at, h, 2u), ql, qh, 2u), q6k_codes(d, q6k_scales(m, at, h, 3u), ql, qh, 3u));
}
