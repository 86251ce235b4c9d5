// Shared by the kernels that read weight matrices (the matrix products, embedding), which include
// it: not a kernel itself, so every weight reader decodes the three storage formats the same way.
//
// Weights keep the checkpoint's format on the device and are widened to f32 as they are read:
//   f32  (DTYPE 0): one value per 32-bit word.
//   f16  (DTYPE 1): two IEEE halves per word, low half first (little-endian), unpack2x16float.
//   bf16 (DTYPE 2): two bfloat16 per word; a bf16 is the top 16 bits of an f32, so widening is
//                   an exact shift (OpenChat 3.5 ships bf16: no rounding through f16).
// DTYPE is a pipeline-overridable constant set by the wrapper; the compiler folds the branches.

override DTYPE: u32 = 1u;
const F32 = 0u;
const F16 = 1u;

// vec4<u32> words per 8 weights: 2 for f32, 1 for the 16-bit formats.
fn words_per_chunk() -> u32 {
  return select(1u, 2u, DTYPE == F32);
}

// Widens one word holding two bf16 values (low half first).
fn bf16x2(word: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

// Widens one word holding two 16-bit values of DTYPE (f16 or bf16).
fn widen2(word: u32) -> vec2<f32> {
  if (DTYPE == F16) {
    return unpack2x16float(word);
  }
  return bf16x2(word);
}

// Eight consecutive weights: `a` holds them for the 16-bit formats; f32 needs `b` too (for
// 16-bit formats the caller's second load is never used and the compiler drops it).
fn widen8(a: vec4<u32>, b: vec4<u32>) -> array<vec4<f32>, 2> {
  if (DTYPE == F32) {
    return array<vec4<f32>, 2>(bitcast<vec4<f32>>(a), bitcast<vec4<f32>>(b));
  }
  return array<vec4<f32>, 2>(vec4<f32>(widen2(a.x), widen2(a.y)), vec4<f32>(widen2(a.z), widen2(a.w)));
}
