/**
 * RMSNorm, plainly (float64 accumulation). Mistral normalises with the root mean
 * square instead of LayerNorm's mean and variance: no centring, no bias.
 */
export function rmsNormRef(x: Float32Array, weight: Float32Array, tokens: number, dim: number, eps: number): Float32Array {
  const y = new Float32Array(tokens * dim);
  for (let t = 0; t < tokens; t++) {
    const row = t * dim;
    let sumOfSquares = 0;
    for (let i = 0; i < dim; i++) sumOfSquares += x[row + i]! * x[row + i]!;
    const invRms = 1 / Math.sqrt(sumOfSquares / dim + eps);
    for (let i = 0; i < dim; i++) y[row + i] = x[row + i]! * invRms * weight[i]!;
  }
  return y;
}
