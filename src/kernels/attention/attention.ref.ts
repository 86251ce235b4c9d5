/**
 * Causal grouped-query attention with a sliding window, plainly, in float64.
 *
 * Keys and values are given for every absolute position (no rolling cache here):
 * k, v are [kvLen, kvHeads, headDim] with kvLen >= pos0 + tokens.
 */
export function attentionRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  o: { tokens: number; pos0: number; heads: number; kvHeads: number; headDim: number; window: number },
): Float32Array {
  const { tokens, pos0, heads, kvHeads, headDim, window } = o;
  const groupSize = heads / kvHeads; // query heads that share one key/value head
  const scale = 1 / Math.sqrt(headDim);
  const out = new Float32Array(tokens * heads * headDim);

  for (let t = 0; t < tokens; t++) {
    const pos = pos0 + t;
    // Causal: no key after the query. Sliding window: the last `window` keys, own included.
    const first = window > 0 ? Math.max(0, pos - window + 1) : 0;
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / groupSize);
      const qRow = (t * heads + h) * headDim;

      const scores: number[] = [];
      for (let j = first; j <= pos; j++) {
        const kRow = (j * kvHeads + g) * headDim;
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[qRow + d]! * k[kRow + d]!;
        scores.push(dot * scale);
      }

      // Softmax, shifted by the maximum so that exp never overflows.
      const max = scores.reduce((a, b) => Math.max(a, b), -Infinity);
      const weights = scores.map((s) => Math.exp(s - max));
      const total = weights.reduce((a, b) => a + b, 0);

      for (let d = 0; d < headDim; d++) {
        let acc = 0;
        for (let j = first; j <= pos; j++) acc += weights[j - first]! * v[(j * kvHeads + g) * headDim + d]!;
        out[qRow + d] = acc / total;
      }
    }
  }
  return out;
}
