/**
 * The batch descriptor of a batched step: row t of the step's activations belongs to
 * sequence `seq` (its region of the KV-cache pool) at absolute position `pos`. One u32
 * pair per row on the device, read by rope (the position), kv_write (where the row's keys
 * go) and batched attention (which keys the row sees). Rows of one sequence must be
 * consecutive positions in order (a prefill chunk) or a single row (a decode step).
 */
import type { Gpu } from '../gpu/device.ts';
import { writeBuffer } from '../gpu/buffers.ts';
import type { Binding } from '../gpu/encoder.ts';

export interface BatchRow {
  /** Absolute position of the row's token in its sequence. */
  pos: number;
  /** Index of the sequence's region in the KV-cache pool. */
  seq: number;
}

/** Bytes of the device buffer per row: vec2<u32>. */
export const BATCH_ROW_BYTES = 8;

/**
 * The batch descriptor as a kernel wrapper's argument (rope, decodeAttentionRows, kvWriteRows):
 * `batchRows`, the buffer writeBatchRows filled (a matrix's rows and the matvec strategy `rows`
 * are other things).
 */
export type BatchRowsArg = { batchRows: Binding };

/**
 * Checks a step's rows against the pool (sequences x slots per sequence) and writes them to
 * `buffer`. With write-before-read attention (batched.wgsl) a sequence's rows of one step all
 * land in its region before any of them reads it, so the region must hold the window of the
 * first row plus every later row: slots >= window + rowsOfThatSequence - 1.
 */
export function writeBatchRows(gpu: Gpu, buffer: GPUBuffer, batchRows: readonly BatchRow[], pool: { sequences: number; slots: number; window: number }): void {
  if (batchRows.length * BATCH_ROW_BYTES > buffer.size) throw new Error(`batch of ${batchRows.length} rows exceeds its buffer (${buffer.size / BATCH_ROW_BYTES} rows)`);
  const perSeq = new Map<number, { first: number; last: number }>();
  const data = new Uint32Array(batchRows.length * 2);
  batchRows.forEach((r, t) => {
    if (!Number.isInteger(r.seq) || r.seq < 0 || r.seq >= pool.sequences) throw new RangeError(`batch row ${t}: sequence ${r.seq} is not in [0, ${pool.sequences})`);
    if (!Number.isInteger(r.pos) || r.pos < 0) throw new RangeError(`batch row ${t}: position ${r.pos} is not a non-negative integer`);
    const seen = perSeq.get(r.seq);
    if (seen && r.pos !== seen.last + 1) throw new RangeError(`batch row ${t}: sequence ${r.seq} jumps from position ${seen.last} to ${r.pos}; a sequence's rows must be consecutive`);
    perSeq.set(r.seq, { first: seen?.first ?? r.pos, last: r.pos });
    data[2 * t] = r.pos;
    data[2 * t + 1] = r.seq;
  });
  for (const [seq, { first, last }] of perSeq) {
    const needed = pool.window > 0 ? Math.min(last + 1, pool.window + last - first) : last + 1;
    if (needed > pool.slots) {
      throw new RangeError(`batch: sequence ${seq} (positions ${first}..${last}) needs ${needed} cache slots at once, its region has ${pool.slots}`);
    }
  }
  writeBuffer(gpu, buffer, data);
}
