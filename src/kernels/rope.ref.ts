/**
 * Rotary position embedding, plainly, in float64 (Hugging Face `rotate_half` convention).
 *
 * Each head vector is split into two halves; element i of the first half and element i
 * of the second half form a 2-D point that is rotated by the angle pos * inv_freq[i].
 * Low i rotate fast (inv_freq[0] = 1), high i slowly, so relative positions show up in
 * q . k as phase differences at many scales.
 */

/** inv_freq[i] = 1 / theta^(2i / headDim), for i < headDim / 2. */
export function ropeInvFreq(headDim: number, theta: number): Float64Array {
  const half = headDim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  return invFreq;
}

/** Returns x [tokens, heads, headDim] rotated; token t is at absolute position pos0 + t. */
export function ropeRef(x: Float32Array, tokens: number, heads: number, headDim: number, pos0: number, theta: number): Float32Array {
  const half = headDim / 2;
  const invFreq = ropeInvFreq(headDim, theta);
  const out = new Float32Array(tokens * heads * headDim);
  for (let t = 0; t < tokens; t++) {
    const pos = pos0 + t;
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const cos = Math.cos(pos * invFreq[i]!);
        const sin = Math.sin(pos * invFreq[i]!);
        const first = x[base + i]!;
        const second = x[base + half + i]!;
        // q * cos + rotate_half(q) * sin, where rotate_half(q) = cat(-second, first).
        out[base + i] = first * cos - second * sin;
        out[base + half + i] = second * cos + first * sin;
      }
    }
  }
  return out;
}
