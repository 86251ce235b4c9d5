/**
 * CPU references for LoRA (float64 accumulation). The update beside a projection:
 *   y[t, o] += scale * sum_j (sum_c x[t, c] a[j, c]) * b[o, j]
 * a = lora_A.weight [rank, inFeatures], b = lora_B.weight [outFeatures, rank], row-major f32.
 * And the merged weight the CPU forward pass uses instead: W + scale * B A.
 */
export function loraUpdateRef(
  x: Float32Array,
  a: Float32Array,
  b: Float32Array,
  scale: number,
  dims: { tokens: number; inFeatures: number; outFeatures: number; rank: number },
): Float32Array {
  const { tokens, inFeatures, outFeatures, rank } = dims;
  const y = new Float32Array(tokens * outFeatures);
  const u = new Float64Array(rank);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < rank; j++) {
      let s = 0;
      for (let c = 0; c < inFeatures; c++) s += x[t * inFeatures + c]! * a[j * inFeatures + c]!;
      u[j] = s;
    }
    for (let o = 0; o < outFeatures; o++) {
      let s = 0;
      for (let j = 0; j < rank; j++) s += u[j]! * b[o * rank + j]!;
      y[t * outFeatures + o] = scale * s;
    }
  }
  return y;
}

/** W + scale * B A: w [outFeatures, inFeatures], a [rank, inFeatures], b [outFeatures, rank]; a new array. */
export function mergeLoraRef(w: Float32Array, a: Float32Array, b: Float32Array, scale: number, rank: number): Float32Array {
  const inFeatures = a.length / rank;
  const outFeatures = b.length / rank;
  if (w.length !== outFeatures * inFeatures) throw new Error(`mergeLoraRef: w has ${w.length} values, need ${outFeatures} x ${inFeatures}`);
  const merged = new Float32Array(w.length);
  for (let o = 0; o < outFeatures; o++) {
    for (let c = 0; c < inFeatures; c++) {
      let s = 0;
      for (let j = 0; j < rank; j++) s += b[o * rank + j]! * a[j * inFeatures + c]!;
      merged[o * inFeatures + c] = w[o * inFeatures + c]! + scale * s;
    }
  }
  return merged;
}

/** gate[i] = silu(gate[i]) * up[i], as a new array. */
export function siluMulRef(gate: Float32Array, up: Float32Array): Float32Array {
  return Float32Array.from(gate, (g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
}
