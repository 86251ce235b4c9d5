// Q5_K's decode (llama.cpp's block_q5_K, 176 bytes = 44 words, stored as the file has it:
// pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   word 0: d (low half), dmin (high half), f16;  words 1..3: 6-bit scales and mins as Q4_K's
//   (ggml.wgsl, k_scale_min);  words 4..11: qh, 32 bytes: bit j of byte l is the fifth bit of
//   weight 32j + l;  words 12..43: the low 4 bits, as the file keeps Q4_K's codes (chunk c:
//   byte l holds weights 64c + l and 64c + 32 + l).
// w = (d sc_j) q - dmin m_j over sub-block j = group j.
// #include "k_head.wgsl"     Head, unit_head, chunk_scales

const UNIT_WORDS = 44u;
const UNIT_COLS = 256u;
const UNIT_TAIL_HALVES = 0u;
const HAS_OFFSET = true;
// A span is a chunk of 64 weights: its two groups share their 8 code words (and qh's 8).
const SPAN = 2u;
// span_dot reads the codes where they lie in their bytes.
const PLACED_X = true;
const UNIT_SPANS = 4u;

fn q5k_codes(d: f32, dmin: f32, sm: vec2<f32>, ql: array<u32, 8>, qh: array<u32, 8>, k: u32) -> GroupCodes {
  var c: GroupCodes;
  let shift = 4u * (k % 2u);
  for (var i = 0u; i < 8u; i++) {
    let word = ((ql[i] >> shift) & 0x0f0f0f0fu) | (((qh[i] >> k) & 0x01010101u) << 4u);
    c.q[i] = bytes4(word);
  }
  let a = d * sm.x;
  let b = -(dmin * sm.y);
  c.a = vec2<f32>(a, a);
  c.b = vec2<f32>(b, b);
  return c;
}

// 8 words from word `at`, 4-word aligned (rows start on 16 bytes, blocks are 44 words).
fn words8(m: ptr<storage, array<vec4<u32>>, read>, at: u32) -> array<u32, 8> {
  let u = (*m)[at / 4u];
  let v = (*m)[at / 4u + 1u];
  return array<u32, 8>(u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w);
}

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + (g / 8u) * UNIT_WORDS;
  let k = g % 8u;
  let head = (*m)[at / 4u];
  return q5k_codes(half_lo(head.x), half_hi(head.x), k_scale_min(head.yzw, k), words8(m, at + 12u + 8u * (k / 2u)), words8(m, at + 4u), k);
}

fn span_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32) -> array<GroupCodes, SPAN> {
  let at = row + (sp / 4u) * UNIT_WORDS;
  let k = 2u * (sp % 4u);
  let head = (*m)[at / 4u];
  let d = half_lo(head.x);
  let dmin = half_hi(head.x);
  let ql = words8(m, at + 12u + 4u * k);
  let qh = words8(m, at + 4u);
  return array<GroupCodes, SPAN>(q5k_codes(d, dmin, k_scale_min(head.yzw, k), ql, qh, k), q5k_codes(d, dmin, k_scale_min(head.yzw, k + 1u), ql, qh, k + 1u));
}

// The decode products' span: a chunk's two groups against x placed (PLACE), as
// (d sc_k) (q . x) - (dmin m_k) sum(x) per group (chunk_scales), the 5-bit codes masked where they lie.
fn span_dot(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32, hd: Head, x: XSpan) -> f32 {
  let at = row + (sp / 4u) * UNIT_WORDS;
  let k = 2u * (sp % 4u);
  let ql = words8(m, at + 12u + 4u * k);
  let qh = words8(m, at + 4u);
  var lo = 0.0;
  var hi = 0.0;
  for (var i = 0u; i < 8u; i++) {
    lo += dot(placed4((ql[i] & 0x0f0f0f0fu) | (((qh[i] >> k) & 0x01010101u) << 4u)), x.xs[0][i]);
    hi += dot(placed4(((ql[i] >> 4u) & 0x0f0f0f0fu) | (((qh[i] >> (k + 1u)) & 0x01010101u) << 4u)), x.xs[1][i]);
  }
  let f = chunk_scales(hd, k / 2u);
  return (f.x * lo + f.y * hi) - (f.z * (x.sums[0].x + x.sums[0].y) + f.w * (x.sums[1].x + x.sums[1].y));
}
