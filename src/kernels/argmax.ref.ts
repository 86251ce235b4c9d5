/** Row-wise argmax, plainly: the first index of each row's maximum. */
export function argmaxRef(logits: Float32Array, n: number, rows: number): Uint32Array {
  const out = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let i = 1; i < n; i++) {
      if (logits[r * n + i]! > logits[r * n + best]!) best = i; // strict: ties keep the lower index
    }
    out[r] = best;
  }
  return out;
}
