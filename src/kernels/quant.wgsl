// Shared by the kernels that read quantized weight matrices (matmul/qmatvec_rows.wgsl,
// matmul/qmatvec_lanes.wgsl, matmul/gemm_read_quant.wgsl, embedding_quant.wgsl), which include
// it: not a kernel itself.
// The formats, their math and their layout are written once, in src/kernels/quant.ref.ts:
//   groups of 32 consecutive weights of a row, one f16 scale d per group;
//   q8 (QFORMAT 0): int8 codes, w = c * d; a group is 32 bytes = 2 vec4<u32>;
//   q4 (QFORMAT 1): 4-bit codes, w = (c - 8) * d; a group is 16 bytes = 1 vec4<u32>, and in each
//                   u32 (8 weights) byte b holds weight b (low nibble) and weight b + 4 (high).
//   One matrix part = one buffer read as vec4<u32>: rows x code_vec4s(cols) words of codes, then
//   rows x scale_vec4s(cols) words of scales (f16, two per u32, low half first; 8 per vec4).
// A kernel walks a row group by group: it loads the group's codes (group_codes) and its scale
// (scale_of), and adds d * group_dot(codes, x, xsum), where x is the group's 32 inputs as
// 8 vec4<f32> and xsum their sum (shared by every row: q4's offset of 8 costs one multiply-add
// per group instead of one subtraction per weight).
// A kernel that shares each group's inputs among many rows may instead scale them once
// (scaled_x) and call group_dot_scaled, which decodes a code where it lies in its word: a
// mask, not a shift and a mask (one operation per weight fewer; llvmpipe's decode is bound by
// such per-weight work once the loads are shared, bench/RESULTS.md). The same products in f32.
// QFORMAT is a pipeline-overridable constant set by the wrapper; the compiler folds the branches.

override QFORMAT: u32;
const Q8 = 0u;
const Q4 = 1u;

// vec4<u32> words of codes per group of 32 weights.
fn group_vec4s() -> u32 {
  return select(1u, 2u, QFORMAT == Q8);
}

// vec4<u32> words of codes per row, and of scales per row (cols % 32 == 0).
fn code_vec4s(cols: u32) -> u32 {
  return cols / 32u * group_vec4s();
}

fn scale_vec4s(cols: u32) -> u32 {
  return (cols / 32u + 7u) / 8u;
}

// Where row `row`'s codes start, and where its scales start, in vec4 words of a part of `rows` rows.
fn codes_at(row: u32, cols: u32) -> u32 {
  return row * code_vec4s(cols);
}

fn scales_at(row: u32, rows: u32, cols: u32) -> u32 {
  return rows * code_vec4s(cols) + row * scale_vec4s(cols);
}

// Scale g (0..7) of a vec4 word of scales.
fn scale_of(words: vec4<u32>, g: u32) -> f32 {
  let pair = unpack2x16float(words[g / 2u]);
  return select(pair.x, pair.y, (g & 1u) == 1u);
}

// The four int8 codes of a word, as f32.
fn i8x4(word: u32) -> vec4<f32> {
  return vec4<f32>((bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u))) >> vec4<u32>(24u));
}

// sum_j c_j x_j (q8) or sum_j (c_j - 8) x_j (q4) over one group: a, b its code words (b unused
// for q4, and the compiler drops its load), xs its 32 inputs, xsum their sum.
fn group_dot(a: vec4<u32>, b: vec4<u32>, xs: array<vec4<f32>, 8>, xsum: f32) -> f32 {
  if (QFORMAT == Q8) {
    return dot(i8x4(a.x), xs[0]) + dot(i8x4(a.y), xs[1]) + dot(i8x4(a.z), xs[2]) + dot(i8x4(a.w), xs[3])
         + dot(i8x4(b.x), xs[4]) + dot(i8x4(b.y), xs[5]) + dot(i8x4(b.z), xs[6]) + dot(i8x4(b.w), xs[7]);
  }
  var s = -8.0 * xsum;
  for (var i = 0u; i < 4u; i++) {
    let v = vec4<u32>(a[i]) >> vec4<u32>(0u, 8u, 16u, 24u);
    s += dot(vec4<f32>(v & vec4<u32>(15u)), xs[2u * i]) + dot(vec4<f32>((v >> vec4<u32>(4u)) & vec4<u32>(15u)), xs[2u * i + 1u]);
  }
  return s;
}

// The sum of a group's 32 inputs.
fn group_sum(xs: array<vec4<f32>, 8>) -> f32 {
  let v = (xs[0] + xs[1]) + (xs[2] + xs[3]) + (xs[4] + xs[5]) + (xs[6] + xs[7]);
  return (v.x + v.y) + (v.z + v.w);
}

// A group's 32 weights, dequantized (exact in f32: a code of at most 8 bits times an f16 scale).
fn group_weights(a: vec4<u32>, b: vec4<u32>, d: f32) -> array<vec4<f32>, 8> {
  var out: array<vec4<f32>, 8>;
  if (QFORMAT == Q8) {
    out = array<vec4<f32>, 8>(i8x4(a.x), i8x4(a.y), i8x4(a.z), i8x4(a.w), i8x4(b.x), i8x4(b.y), i8x4(b.z), i8x4(b.w));
  } else {
    for (var i = 0u; i < 4u; i++) {
      let v = vec4<u32>(a[i]) >> vec4<u32>(0u, 8u, 16u, 24u);
      out[2u * i] = vec4<f32>(v & vec4<u32>(15u)) - 8.0;
      out[2u * i + 1u] = vec4<f32>((v >> vec4<u32>(4u)) & vec4<u32>(15u)) - 8.0;
    }
  }
  for (var i = 0u; i < 8u; i++) {
    out[i] *= d;
  }
  return out;
}

fn dot32(a: array<vec4<f32>, 8>, b: array<vec4<f32>, 8>) -> f32 {
  return ((dot(a[0], b[0]) + dot(a[1], b[1])) + (dot(a[2], b[2]) + dot(a[3], b[3])))
       + ((dot(a[4], b[4]) + dot(a[5], b[5])) + (dot(a[6], b[6]) + dot(a[7], b[7])));
}

// group_dot_scaled's inputs: x times 2^-8b for a code that lies b bytes up its word. Scaling by
// a power of two is exact, so c 2^8b * x 2^-8b rounds exactly as c * x does (but for inputs
// under 2^-102 in magnitude, which become subnormal: an absolute error below 2^-122).
const Q4_XSCALE = vec4<f32>(1.0, 0.00390625, 1.52587890625e-05, 5.9604644775390625e-08);
const Q8_XSCALE = vec4<f32>(1.0, 0.00390625, 1.52587890625e-05, 1.0);

fn scaled_x(xs: array<vec4<f32>, 8>) -> array<vec4<f32>, 8> {
  let f = select(Q4_XSCALE, Q8_XSCALE, QFORMAT == Q8);
  return array<vec4<f32>, 8>(xs[0] * f, xs[1] * f, xs[2] * f, xs[3] * f, xs[4] * f, xs[5] * f, xs[6] * f, xs[7] * f);
}

// group_dot over xp = scaled_x(xs) (xsum stays the unscaled sum).
//   q4: the codes of weights 0..3 of a word lie at bits 0, 8, 16, 24, those of weights 4..7
//       there too after one shift by 4: masked, c 2^8b converts to f32 exactly (< 2^31).
//   q8: flipping bit 7 of each byte makes c + 128 in 0..255 (offset binary, as q4's offset of
//       8): bytes 0..2 masked in place, byte 3 shifted down (255 2^24 would not fit an i32).
fn group_dot_scaled(a: vec4<u32>, b: vec4<u32>, xp: array<vec4<f32>, 8>, xsum: f32) -> f32 {
  if (QFORMAT == Q8) {
    const m8 = vec4<u32>(0xFFu, 0xFF00u, 0xFF0000u, 0xFFu);
    var s = -128.0 * xsum;
    for (var i = 0u; i < 4u; i++) {
      let u = a[i] ^ 0x80808080u;
      let v = b[i] ^ 0x80808080u;
      s += dot(vec4<f32>(vec4<u32>(u, u, u, u >> 24u) & m8), xp[i]) + dot(vec4<f32>(vec4<u32>(v, v, v, v >> 24u) & m8), xp[4u + i]);
    }
    return s;
  }
  const m4 = vec4<u32>(0xFu, 0xF00u, 0xF0000u, 0xF000000u);
  var s = -8.0 * xsum;
  for (var i = 0u; i < 4u; i++) {
    s += dot(vec4<f32>(vec4<u32>(a[i]) & m4), xp[2u * i]) + dot(vec4<f32>(vec4<u32>(a[i] >> 4u) & m4), xp[2u * i + 1u]);
  }
  return s;
}
