/** Top-k, plainly: sort all indices by (value descending, index ascending), keep k. */
export function topKRef(logits: Float32Array, n: number, k: number): { ids: Uint32Array; values: Float32Array } {
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => logits[b]! - logits[a]! || a - b);
  const ids = Uint32Array.from(order.slice(0, k));
  const values = Float32Array.from(ids, (i) => logits[i]!);
  return { ids, values };
}
