/**
 * CPU reference for matmul: y[t, r] = sum_c x[t, c] * w[r, c], accumulated in
 * float64. `w` is [outFeatures, inFeatures] row-major (Hugging Face layout),
 * already widened to f32; x is [tokens, inFeatures]; y is [tokens, outFeatures].
 */
export function matmulRef(x: Float32Array, w: Float32Array, tokens: number, outFeatures: number, inFeatures: number): Float32Array {
  if (x.length < tokens * inFeatures) throw new Error(`matmulRef: x has ${x.length} values, need ${tokens * inFeatures}`);
  if (w.length !== outFeatures * inFeatures) throw new Error(`matmulRef: w has ${w.length} values, need ${outFeatures * inFeatures}`);
  const y = new Float32Array(tokens * outFeatures);
  for (let t = 0; t < tokens; t++) {
    const xRow = t * inFeatures;
    for (let r = 0; r < outFeatures; r++) {
      const wRow = r * inFeatures;
      let sum = 0;
      for (let c = 0; c < inFeatures; c++) sum += x[xRow + c]! * w[wRow + c]!;
      y[t * outFeatures + r] = sum;
    }
  }
  return y;
}
