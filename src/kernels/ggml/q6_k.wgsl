// Q6_K's decode (llama.cpp's block_q6_K, 210 bytes: its first 208 stored as the file has them,
// 52 words, its d after the row's blocks: pack.ts), bound to `<ggml_format>` beside ggml.wgsl:
// not a kernel itself. Reads p.cols (every module that includes it has Params p with cols).
//   words 0..31: ql, 128 bytes of low 4 bits, two halves of 64 bytes: byte l of half h holds
//     weight 128h + l (low nibble) and 128h + 64 + l (high nibble), l < 64;
//   words 32..47: qh, 64 bytes of high 2 bits, two halves of 32: byte l of half h holds weights
//     128h + 32j + l at bits 2j, 2j + 1 (j = 0..3);
//   words 48..51: 16 int8 scales, one per 16 weights;  d: f16 u of the row's tail, after its
//   cols / 256 blocks.
// w = (d sc_(i/16)) (q - 32), q = ql | qh << 4 (6 bits).
// A word of ql masked and a word of qh shifted into bits 4..5 make four 6-bit codes at once.

const UNIT_WORDS = 52u;
const UNIT_TAIL_HALVES = 1u;
const UNIT_COLS = 256u;
const HAS_OFFSET = false;
// A span is a half block: its 4 groups share their ql and qh words.
const SPAN = 4u;
// span_dot reads the codes where they lie in their bytes.
const PLACED_X = true;
const UNIT_SPANS = 2u;

// Block u's d, from the row's tail.
fn q6k_d(m: ptr<storage, array<vec4<u32>>, read>, row: u32, u: u32) -> f32 {
  let word = wd(m, row + (p.cols / UNIT_COLS) * UNIT_WORDS + u / 2u);
  return select(half_lo(word), half_hi(word), (u & 1u) == 1u);
}

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

// 16 and 8 words from word `at`, 4-word aligned (rows start on 16 bytes, blocks are 52 words).
fn q6k_ql(m: ptr<storage, array<vec4<u32>>, read>, at: u32) -> array<u32, 16> {
  var v: array<u32, 16>;
  for (var i = 0u; i < 4u; i++) {
    let q = (*m)[at / 4u + i];
    v[4u * i] = q.x;
    v[4u * i + 1u] = q.y;
    v[4u * i + 2u] = q.z;
    v[4u * i + 3u] = q.w;
  }
  return v;
}

fn q6k_qh(m: ptr<storage, array<vec4<u32>>, read>, at: u32) -> array<u32, 8> {
  let u = (*m)[at / 4u];
  let v = (*m)[at / 4u + 1u];
  return array<u32, 8>(u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w);
}

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let at = row + (g / 8u) * UNIT_WORDS;
  let h = (g % 8u) / 4u;
  let j = g % 4u;
  // Only the 8 ql words of this group are read (the others of the array stay zero).
  var ql: array<u32, 16>;
  let half = q6k_qh(m, at + 16u * h + 8u * (j % 2u));
  for (var i = 0u; i < 8u; i++) {
    ql[8u * (j % 2u) + i] = half[i];
  }
  let d = q6k_d(m, row, g / 8u);
  return q6k_codes(d, q6k_scales(m, at, h, j), ql, q6k_qh(m, at + 32u + 8u * h), j);
}

fn span_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32) -> array<GroupCodes, SPAN> {
  let at = row + (sp / 2u) * UNIT_WORDS;
  let h = sp % 2u;
  let ql = q6k_ql(m, at + 16u * h);
  let qh = q6k_qh(m, at + 32u + 8u * h);
  let d = q6k_d(m, row, sp / 2u);
  return array<GroupCodes, SPAN>(
    q6k_codes(d, q6k_scales(m, at, h, 0u), ql, qh, 0u), q6k_codes(d, q6k_scales(m, at, h, 1u), ql, qh, 1u),
    q6k_codes(d, q6k_scales(m, at, h, 2u), ql, qh, 2u), q6k_codes(d, q6k_scales(m, at, h, 3u), ql, qh, 3u));
}

// The decode products keep a block's d (decoded) and its 16 int8 scales (4 words) per row for
// its two spans.
struct Head {
  scales: vec4<u32>,
  d: f32,
}

fn unit_head(m: ptr<storage, array<vec4<u32>>, read>, row: u32, u: u32) -> Head {
  let at = row + u * UNIT_WORDS;
  return Head((*m)[(at + 48u) / 4u], q6k_d(m, row, u));
}

// The decode products' span: a half block's four groups against x placed (PLACE), as
// (d sc) ((q . x) - 32 sum(x)) per 16 weights (d and the scales from unit_head), the 6-bit codes masked where they lie.
fn span_dot(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32, hd: Head, x: XSpan) -> f32 {
  let at = row + (sp / 2u) * UNIT_WORDS;
  let h = sp % 2u;
  let ql = q6k_ql(m, at + 16u * h);
  let qh = q6k_qh(m, at + 32u + 8u * h);
  var s = 0.0;
  for (var j = 0u; j < 4u; j++) {
    var lo = 0.0;
    var hi = 0.0;
    for (var i = 0u; i < 8u; i++) {
      let q = placed4(((ql[8u * (j % 2u) + i] >> (4u * (j / 2u))) & 0x0f0f0f0fu) | (((qh[i] >> (2u * j)) & 0x03030303u) << 4u));
      if (i < 4u) {
        lo += dot(q, x.xs[j][i]);
      } else {
        hi += dot(q, x.xs[j][i]);
      }
    }
    // Scales 8h + 2j, 8h + 2j + 1: bytes 2 (j % 2), + 1 of scale word 2h + j / 2.
    let sc = hd.scales[2u * h + j / 2u] >> (16u * (j % 2u));
    s += (hd.d * i8_of(sc)) * (lo - 32.0 * x.sums[j].x) + (hd.d * i8_of(sc >> 8u)) * (hi - 32.0 * x.sums[j].y);
  }
  return s;
}
