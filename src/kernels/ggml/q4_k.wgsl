// Q4_K's decode (llama.cpp's block_q4_K, 144 bytes = 36 words; its codes re-ordered at load into
// q4's group order: pack.ts), bound to `<ggml_format>` beside ggml.wgsl: not a kernel itself.
//   word 0: d (low half), dmin (high half), f16;  words 1..3: 12 bytes of 6-bit scales and
//   mins, 8 of each (ggml.wgsl, k_scale_min);
//   words 4..35: 128 bytes of 4-bit codes, 16 bytes per group of 32 weights (group j at word
//   4 + 4j): byte l of the group's word i holds weight 32j + 8i + l (low nibble) and
//   32j + 8i + l + 4 (high nibble), as q4's codes (../quant.wgsl).
// w = (d sc_j) q - dmin m_j over sub-block j = weights 32j .. 32j + 31 (one group).
// #include "k_head.wgsl"     Head, unit_head, chunk_scales

const UNIT_WORDS = 36u;
const UNIT_COLS = 256u;
const UNIT_TAIL_HALVES = 0u;
const HAS_OFFSET = true;
// A span is one group: its 16 bytes of codes are one vec4 load.
const SPAN = 1u;
// span_dot reads the codes where they lie in their bytes.
const PLACED_X = true;
const UNIT_SPANS = 8u;
const NIBBLE_MASKS = vec4<u32>(0xfu, 0xf00u, 0xf0000u, 0xf000000u);

// Group j's code words (4-word aligned: rows start on 16 bytes, blocks are 36 words, groups 4 words from word 4).
fn group_words(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> vec4<u32> {
  return (*m)[(row + (g / 8u) * UNIT_WORDS + 4u + 4u * (g % 8u)) / 4u];
}

fn group_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> GroupCodes {
  let head = (*m)[(row + (g / 8u) * UNIT_WORDS) / 4u];
  let words = group_words(m, row, g);
  let sm = k_scale_min(head.yzw, g % 8u);
  var c: GroupCodes;
  for (var i = 0u; i < 4u; i++) {
    let v = vec4<u32>(words[i]) >> vec4<u32>(0u, 8u, 16u, 24u);
    c.q[2u * i] = vec4<f32>(v & vec4<u32>(15u));
    c.q[2u * i + 1u] = vec4<f32>((v >> vec4<u32>(4u)) & vec4<u32>(15u));
  }
  let a = half_lo(head.x) * sm.x;
  let b = -(half_hi(head.x) * sm.y);
  c.a = vec2<f32>(a, a);
  c.b = vec2<f32>(b, b);
  return c;
}

fn span_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32) -> array<GroupCodes, SPAN> {
  return array<GroupCodes, SPAN>(group_codes(m, row, sp));
}

// The decode products' span: one group against x placed (PLACE), as (d sc_j) (q . x) - (dmin m_j) sum(x)
// (chunk_scales), the codes masked where they lie, as quant.wgsl's group_dot_scaled.
fn span_dot(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32, hd: Head, x: XSpan) -> f32 {
  let words = group_words(m, row, sp);
  var s = 0.0;
  for (var i = 0u; i < 4u; i++) {
    s += dot(vec4<f32>(vec4<u32>(words[i]) & NIBBLE_MASKS), x.xs[0][2u * i]) + dot(vec4<f32>(vec4<u32>(words[i] >> 4u) & NIBBLE_MASKS), x.xs[0][2u * i + 1u]);
  }
  let k = sp % 8u;
  let f = chunk_scales(hd, k / 2u);
  let odd = (k & 1u) == 1u;
  return select(f.x, f.y, odd) * s - select(f.z, f.w, odd) * (x.sums[0].x + x.sums[0].y);
}
