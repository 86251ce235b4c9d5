/**
 * CPU reference for the embedding gather: row ids[t] of `table` ([vocab, hidden]
 * row-major, widened to f32) becomes row t of the output [ids.length, hidden].
 */
export function embeddingRef(table: Float32Array, ids: ArrayLike<number>, hidden: number): Float32Array {
  const out = new Float32Array(ids.length * hidden);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!;
    if (!(id >= 0 && (id + 1) * hidden <= table.length)) throw new Error(`embeddingRef: id ${id} out of range`);
    out.set(table.subarray(id * hidden, (id + 1) * hidden), t * hidden);
  }
  return out;
}
