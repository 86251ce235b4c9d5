// The decode-product interface (ggml.wgsl's header) of a format decoded one group at a time:
// a span is one group, no x placed, nothing kept per unit. Included by the decode files of
// Q4_1, Q5_1, Q5_0, Q2_K and Q3_K (their codes share no words across groups worth one load):
// not a kernel itself.

const SPAN = 1u;
const PLACED_X = false;
const UNIT_SPANS = UNIT_COLS / 32u;

fn span_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32) -> array<GroupCodes, SPAN> {
  return array<GroupCodes, SPAN>(group_codes(m, row, sp));
}

// No scales worth decoding once per unit for the decode products: each span decodes its own.
struct Head {
  unused: u32,
}

fn unit_head(m: ptr<storage, array<vec4<u32>>, read>, row: u32, u: u32) -> Head {
  return Head(0u);
}

fn span_dot(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32, head: Head, x: XSpan) -> f32 {
  return span_dot_codes(m, row, sp, x);
}
