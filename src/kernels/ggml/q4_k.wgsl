// Q4_K's decode (llama.cpp's block_q4_K, 144 bytes = 36 words, stored as the file has it:
// pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   word 0: d (low half), dmin (high half), f16;  words 1..3: 12 bytes of 6-bit scales and
//   mins, 8 of each (ggml.wgsl, k_scale_min);
//   words 4..35: 128 bytes of 4-bit codes, in 4 chunks of 32 bytes: byte l of chunk c holds
//   weight 64c + l (low nibble) and 64c + 32 + l (high nibble).
// w = (d sc_j) q - dmin m_j over sub-block j = weights 32j .. 32j + 31 (one group).
// #include "k_head.wgsl"     Head, unit_head, chunk_scales

const UNIT_WORDS = 36u;
const UNIT_COLS = 256u;
const UNIT_TAIL_HALVES = 0u;
const HAS_OFFSET = true;
// A span is one chunk: the two groups that share its 8 code words.
const SPAN = 2u;
// span_dot reads the codes where they lie in their bytes.
const PLACED_X = true;
const UNIT_SPANS = 4u;
const NIBBLE_MASKS = vec4<u32>(0xfu, 0xf00u, 0xf0000u, 0xf000000u);

// A group from its block's d, dmin, its (sc, m) and its chunk's 8 code words (shift 0: the
// chunk's first group, 4: its second).
fn q4k_codes(d: f32, dmin: f32, sm: vec2<f32>, words: array<u32, 8>, shift: u32) -> GroupCodes {
  var c: GroupCodes;
  for (var i = 0u; i < 8u; i++) {
    c.q[i] = vec4<f32>((vec4<u32>(words[i]) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(15u));
  }
  let a = d * sm.x;
  let b = -(dmin * sm.y);
  c.a = vec2<f32>(a, a);
  c.b = vec2<f32>(b, b);
  return c;
}

fn chunk_words(m: ptr<storage, array<vec4<u32>>, read>, at: u32) -> array<u32, 8> {
  // `at` is 4-word aligned: rows start on 16 bytes, blocks are 36 words, chunks 8 words from word 4.
  let u = (*m)[at / 4u];
  let v = (*m)[at / 4u + 1u];
  return array<u32, 8>(u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w);
}

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + (g / 8u) * UNIT_WORDS;
  let k = g % 8u;
  let head = (*m)[at / 4u];
  let dd = head.x;
  let s = head.yzw;
  return q4k_codes(half_lo(dd), half_hi(dd), k_scale_min(s, k), chunk_words(m, at + 4u + 8u * (k / 2u)), 4u * (k % 2u));
}

fn span_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32) -> array<GroupCodes, SPAN> {
  let at = row + (sp / 4u) * UNIT_WORDS;
  let k = 2u * (sp % 4u);
  let head = (*m)[at / 4u];
  let d = half_lo(head.x);
  let dmin = half_hi(head.x);
  let words = chunk_words(m, at + 4u + 4u * k);
  return array<GroupCodes, SPAN>(q4k_codes(d, dmin, k_scale_min(head.yzw, k), words, 0u), q4k_codes(d, dmin, k_scale_min(head.yzw, k + 1u), words, 4u));
}

// The decode products' span: a chunk's two groups against x placed (PLACE), as
// (d sc_k) (q . x) - (dmin m_k) sum(x) per group (chunk_scales), the codes masked where they lie.
fn span_dot(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32, hd: Head, x: XSpan) -> f32 {
  let at = row + (sp / 4u) * UNIT_WORDS;
  let k = 2u * (sp % 4u);
  let words = chunk_words(m, at + 4u + 4u * k);
  var lo = 0.0;
  var hi = 0.0;
  for (var i = 0u; i < 8u; i++) {
    lo += dot(vec4<f32>(vec4<u32>(words[i]) & NIBBLE_MASKS), x.xs[0][i]);
    hi += dot(vec4<f32>(vec4<u32>(words[i] >> 4u) & NIBBLE_MASKS), x.xs[1][i]);
  }
  let f = chunk_scales(hd, k / 2u);
  return (f.x * lo + f.y * hi) - (f.z * (x.sums[0].x + x.sums[0].y) + f.w * (x.sums[1].x + x.sums[1].y));
}
