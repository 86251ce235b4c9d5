/**
 * Rotary position embedding on the device (Mistral's `apply_rotary_pos_emb`).
 * The cos/sin table is computed once on the CPU in float64 (see rope.wgsl for why)
 * and shared by every layer and by both q and k.
 */
import type { Gpu } from '../gpu/device.ts';
import { uploadF32 } from '../gpu/buffers.ts';
import { Encoder, getPipeline, kernelSource, UniformLayout, wgsl, type Binding } from '../gpu/encoder.ts';
import type { BatchRowsArg } from './batch_rows.ts';
import { ropeInvFreq } from './rope.ref.ts';

/** rope.wgsl's override constants: WG invocations per workgroup, one (q or k) pair each. */
const TILES = { WG: 64 } as const;
const PARAMS = new UniformLayout({ heads: 'u32', kvHeads: 'u32', headDim: 'u32', pos0: 'u32' });

/** What a table was built for, so that `rope` can refuse a mismatched one. */
const tableShapes = new WeakMap<GPUBuffer, { maxPositions: number; headDim: number }>();

/**
 * A [maxPositions, headDim / 2] table of (cos, sin) pairs of pos * inv_freq[i], as f32,
 * computed in float64 so that large positions (tens of thousands of radians) stay accurate.
 */
export function ropeTable(gpu: Gpu, maxPositions: number, headDim: number, theta: number): GPUBuffer {
  if (headDim % 2 !== 0) throw new Error(`ropeTable: headDim must be even, got ${headDim}`);
  const half = headDim / 2;
  const invFreq = ropeInvFreq(headDim, theta);
  const data = new Float32Array(maxPositions * half * 2);
  for (let pos = 0; pos < maxPositions; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i]!;
      data[(pos * half + i) * 2] = Math.cos(angle);
      data[(pos * half + i) * 2 + 1] = Math.sin(angle);
    }
  }
  const buffer = uploadF32(gpu, data, `rope-table[${maxPositions}x${headDim}]`);
  tableShapes.set(buffer, { maxPositions, headDim });
  return buffer;
}

/**
 * Rotates q [tokens, heads, headDim] and k [tokens, kvHeads, headDim] in place, in one
 * dispatch; token t is at absolute position pos0 + t, or, given the batch descriptor `batchRows`
 * (kernels/batch_rows.ts, a batched step), at batchRows[t].pos, and then pos0 is the largest
 * position of the step (for the table's bound).
 */
export function rope(
  enc: Encoder,
  a: { q: Binding; k: Binding; table: GPUBuffer; tokens: number; heads: number; kvHeads: number; headDim: number; pos0: number } & Partial<BatchRowsArg>,
): void {
  if (a.tokens === 0) return;
  const shape = tableShapes.get(a.table);
  if (!shape) throw new Error('rope: table was not made by ropeTable()');
  if (shape.headDim !== a.headDim) throw new Error(`rope: table is for headDim ${shape.headDim}, not ${a.headDim}`);
  const batchRows = a.batchRows;
  const last = batchRows ? a.pos0 : a.pos0 + a.tokens - 1;
  if (last >= shape.maxPositions) {
    throw new Error(`rope: positions up to ${last} exceed the table's ${shape.maxPositions}`);
  }
  const entry = batchRows ? 'batch_rows' : 'main';
  const pipeline = getPipeline(enc.gpu, kernelSource(wgsl('rope.wgsl', import.meta.url), PARAMS), entry, TILES, `rope ${entry}`);
  const pairs = (a.heads + a.kvHeads) * (a.headDim / 2);
  const storage = batchRows ? [a.q, a.k, a.table, batchRows] : [a.q, a.k, a.table];
  enc.dispatch(pipeline, PARAMS.pack({ heads: a.heads, kvHeads: a.kvHeads, headDim: a.headDim, pos0: a.pos0 }), storage, [Math.ceil(pairs / TILES.WG), a.tokens]);
}
