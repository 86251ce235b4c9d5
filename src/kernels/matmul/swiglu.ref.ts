/**
 * CPU reference for the fused SwiGLU projection (float64 accumulation):
 *   y[t, i] = silu(sum_c x[t, c] wGate[i, c]) * (sum_c x[t, c] wUp[i, c]),  silu(g) = g / (1 + e^-g).
 * wGate, wUp: [intermediate, hidden] row-major, widened to f32; x: [tokens, hidden].
 */
export function swigluRef(
  x: Float32Array,
  wGate: Float32Array,
  wUp: Float32Array,
  tokens: number,
  intermediate: number,
  hidden: number,
): Float32Array {
  const y = new Float32Array(tokens * intermediate);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < intermediate; i++) {
      let g = 0;
      let u = 0;
      for (let c = 0; c < hidden; c++) {
        const xc = x[t * hidden + c]!;
        g += xc * wGate[i * hidden + c]!;
        u += xc * wUp[i * hidden + c]!;
      }
      y[t * intermediate + i] = (g / (1 + Math.exp(-g))) * u;
    }
  }
  return y;
}
