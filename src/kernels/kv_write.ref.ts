/**
 * The KV-cache write, plainly: row t of the chunk goes to slot (pos0 + t) % slots.
 * Updates `cache` ([slots, rowLen]) in place, in order, so later rows win a shared slot.
 */
export function kvWriteRef(cache: Float32Array, chunk: Float32Array, tokens: number, pos0: number, rowLen: number, slots: number): void {
  for (let t = 0; t < tokens; t++) {
    const slot = (pos0 + t) % slots;
    for (let i = 0; i < rowLen; i++) cache[slot * rowLen + i] = chunk[t * rowLen + i]!;
  }
}
