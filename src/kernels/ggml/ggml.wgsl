// Shared by the kernels that read llama.cpp's block formats (ggml/matvec_rows.wgsl,
// ggml/matvec_lanes.wgsl, ggml/gemm_read_ggml.wgsl, ggml/embedding_ggml.wgsl), which include it
// beside their format's decode file (the wrapper binds `<ggml_format>` to ggml/q4_k.wgsl, ...):
// not a kernel itself.
// The device layout (pack.ts): a row of a matrix part is its blocks as the GGUF file stores
// them (each padded to a 4-byte multiple; q5_0 two blocks per unit; q6_k's d moved after the
// row's blocks), one after another, the row padded to a multiple of 16 bytes; a part is its
// rows one after another, read as vec4<u32>.
// Every format is decoded group by group, a group being 32 consecutive weights of a row, as
// GroupCodes: integer codes q (exact in f32) and per half of 16 weights a scale a and an offset
// b, w = a q + b. a q is exact in every format (an f16 scale times sub-block scale times code:
// at most 24 significant bits), so w rounds once, as dequant.ref.ts's own `d * q - dm` does:
// group_weights gives the reference's f32 weights bit for bit.
// A format's decode file defines UNIT_WORDS, UNIT_COLS (u32 words and columns of one unit),
// UNIT_TAIL_HALVES (f16 per unit after the row's units: q6_k's d), HAS_OFFSET (whether b is
// ever nonzero),
// group_codes (one group), and SPAN with span_codes (SPAN consecutive groups at once, for the
// lavapipe decode: a format whose groups share code words loads them once per span).

struct GroupCodes {
  q: array<vec4<f32>, 8>,  // codes of weights 4i .. 4i + 3 in q[i]
  a: vec2<f32>,            // scale of weights 0..15, 16..31
  b: vec2<f32>,            // offset of weights 0..15, 16..31 (zero where the format has none)
}

// u32 words of one row of `cols` weights: its units, their tail of f16 (q6_k's d), 16-byte padded.
fn row_words(cols: u32) -> u32 {
  let units = (cols + UNIT_COLS - 1u) / UNIT_COLS;
  return (units * UNIT_WORDS + (units * UNIT_TAIL_HALVES + 1u) / 2u + 3u) / 4u * 4u;
}

// Word i (a u32 index) of a part's buffer.
fn wd(m: ptr<storage, array<vec4<u32>>, read>, i: u32) -> u32 {
  return (*m)[i >> 2u][i & 3u];
}

// An f16 bit pattern as f32, subnormals kept (unpack2x16float may flush them on llvmpipe).
fn half_exact(h: u32) -> f32 {
  let e = (h >> 10u) & 31u;
  let sign = (h & 0x8000u) << 16u;
  let normal = bitcast<f32>(sign | select((e + 112u) << 23u, 0x7f800000u, e == 31u) | ((h & 1023u) << 13u));
  let sub = f32(h & 1023u) * 5.9604644775390625e-08;
  return select(normal, select(sub, -sub, sign != 0u), e == 0u);
}

fn half_lo(word: u32) -> f32 {
  return half_exact(word & 0xffffu);
}

fn half_hi(word: u32) -> f32 {
  return half_exact(word >> 16u);
}

// The four bytes of a word as f32 (byte 0 first).
fn bytes4(word: u32) -> vec4<f32> {
  return vec4<f32>((vec4<u32>(word) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u));
}

// Byte i of the run of words starting at word `at`.
fn byte_at(m: ptr<storage, array<vec4<u32>>, read>, at: u32, i: u32) -> u32 {
  return (wd(m, at + i / 4u) >> (8u * (i % 4u))) & 255u;
}

// Q4_K's and Q5_K's 6-bit scale and min of sub-block j (0..7) from the block's three words of
// them (bytes 0..11): j < 4: sc = byte j & 63, m = byte j + 4 & 63; j >= 4: the low / high
// nibble of byte j + 4, topped by the high two bits of byte j - 4 / byte j.
fn k_scale_min(s: vec3<u32>, j: u32) -> vec2<f32> {
  if (j < 4u) {
    let lo = (s.x >> (8u * j)) & 255u;                      // byte j
    let mb = (s.y >> (8u * j)) & 255u;                      // byte j + 4
    return vec2<f32>(f32(lo & 63u), f32(mb & 63u));
  }
  let k = j - 4u;
  let hb = (s.z >> (8u * k)) & 255u;                        // byte j + 4
  let top_sc = (s.x >> (8u * k + 6u)) & 3u;                 // byte j - 4, bits 6..7
  let top_m = (s.y >> (8u * k + 6u)) & 3u;                  // byte j, bits 6..7
  return vec2<f32>(f32((hb & 15u) | (top_sc << 4u)), f32((hb >> 4u) | (top_m << 4u)));
}

// A group's 32 weights in f32, bit for bit the reference's.
fn weights_of(c: GroupCodes) -> array<vec4<f32>, 8> {
  var out: array<vec4<f32>, 8>;
  for (var i = 0u; i < 8u; i++) {
    let h = i / 4u;
    // Formats without an offset skip the add: a q may be -0, and -0 + 0 is +0.
    out[i] = select(c.q[i] * c.a[h], c.q[i] * c.a[h] + c.b[h], HAS_OFFSET);
  }
  return out;
}

fn group_weights(m: ptr<storage, array<vec4<u32>>, read>, row: u32, g: u32) -> array<vec4<f32>, 8> {
  return weights_of(group_codes(m, row, g));
}

// sum_j w_j x_j over a group as a (q . x) + b sum(x) per half: xs its 32 inputs, sums their two
// half sums (shared by every row: the offsets cost a multiply-add per half, not per weight).
fn codes_dot(c: GroupCodes, xs: array<vec4<f32>, 8>, sums: vec2<f32>) -> f32 {
  let lo = (dot(c.q[0], xs[0]) + dot(c.q[1], xs[1])) + (dot(c.q[2], xs[2]) + dot(c.q[3], xs[3]));
  let hi = (dot(c.q[4], xs[4]) + dot(c.q[5], xs[5])) + (dot(c.q[6], xs[6]) + dot(c.q[7], xs[7]));
  return (c.a.x * lo + c.b.x * sums.x) + (c.a.y * hi + c.b.y * sums.y);
}

// A span's inputs as matvec_rows.wgsl shares them among the rows of an invocation: SPAN groups
// of 32 (placed by PLACE where the format's span_dot reads codes where they lie in their bytes,
// PLACED_X), and each group's two half sums (of the inputs as given).
struct XSpan {
  xs: array<array<vec4<f32>, 8>, SPAN>,
  sums: array<vec2<f32>, SPAN>,
}

// x times 2^-8b for a code that lies b bytes up its word, masked there instead of shifted down:
// one operation per weight fewer. Scaling by a power of two is exact, so c 2^8b * x 2^-8b
// rounds as c * x does (but for inputs under 2^-102 in magnitude, which become subnormal: an
// absolute error below 2^-122; quant.wgsl's group_dot_scaled does the same).
const PLACE = vec4<f32>(1.0, 0.00390625, 1.52587890625e-05, 5.9604644775390625e-08);
const BYTE_MASKS = vec4<u32>(0xffu, 0xff00u, 0xff0000u, 0xff000000u);

// The four bytes of a word where they lie (byte b times 2^8b), as f32: exact, a code of at most
// 8 bits times a power of two.
fn placed4(word: u32) -> vec4<f32> {
  return vec4<f32>(vec4<u32>(word) & BYTE_MASKS);
}

// span_dot through the format's span_codes (formats without a span_dot of their own).
fn span_dot_codes(m: ptr<storage, array<vec4<u32>>, read>, row: u32, sp: u32, x: XSpan) -> f32 {
  let c = span_codes(m, row, sp);
  var s = 0.0;
  for (var k = 0u; k < SPAN; k++) {
    s += codes_dot(c[k], x.xs[k], x.sums[k]);
  }
  return s;
}

// The half sums of a group's 32 inputs.
fn half_sums(xs: array<vec4<f32>, 8>) -> vec2<f32> {
  let lo = (xs[0] + xs[1]) + (xs[2] + xs[3]);
  let hi = (xs[4] + xs[5]) + (xs[6] + xs[7]);
  return vec2<f32>((lo.x + lo.y) + (lo.z + lo.w), (hi.x + hi.y) + (hi.z + hi.w));
}

fn dot32(a: array<vec4<f32>, 8>, b: array<vec4<f32>, 8>) -> f32 {
  return ((dot(a[0], b[0]) + dot(a[1], b[1])) + (dot(a[2], b[2]) + dot(a[3], b[3])))
       + ((dot(a[4], b[4]) + dot(a[5], b[5])) + (dot(a[6], b[6]) + dot(a[7], b[7])));
}
