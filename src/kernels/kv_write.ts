/**
 * Appends a chunk's keys and values (after RoPE) to the layer's rolling KV cache.
 * Position j lives in slot j % slots; with slots = sliding_window the cache never
 * grows, and a slot is overwritten exactly when its key leaves every later query's window.
 * The cache is f32 or f16 (`dtype`, chosen at model load); the chunk is always f32.
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, wgsl, type Binding } from '../gpu/encoder.ts';
import type { BatchRowsArg } from './batch_rows.ts';
import { kvCacheSlots, type KvCacheDtype } from './kv_cache.ts';

/** kv_write.wgsl's override constants: WG invocations per workgroup, 4 values of a row each. */
const TILES = { WG: 64 } as const;
const PARAMS = new UniformLayout({ rowChunks: 'u32', firstRow: 'u32', pos0: 'u32', slots: 'u32' });

/** kv_write.wgsl with the cache format's file as its <kv_cache>. */
function source(dtype: KvCacheDtype) {
  return kernelSource(wgsl('kv_write.wgsl', import.meta.url, kvCacheSlots(dtype)), PARAMS);
}

export function kvWrite(
  enc: Encoder,
  a: {
    kNew: Binding;
    vNew: Binding;
    kCache: Binding;
    vCache: Binding;
    tokens: number;
    pos0: number;
    kvHeads: number;
    headDim: number;
    slots: number;
    dtype: KvCacheDtype;
  },
): void {
  if (a.tokens === 0) return;
  if (a.slots < 1) throw new Error(`kvWrite: slots must be positive, got ${a.slots}`);
  if (a.headDim % 4 !== 0) throw new Error(`kvWrite: headDim must be a multiple of 4, got ${a.headDim}`);
  const rowChunks = (a.kvHeads * a.headDim) / 4;
  const rowsWritten = Math.min(a.tokens, a.slots);
  const pipeline = getPipeline(enc.gpu, source(a.dtype), 'main', TILES, `kv_write_${a.dtype}`);
  enc.dispatch(
    pipeline,
    PARAMS.pack({ rowChunks, firstRow: a.tokens - rowsWritten, pos0: a.pos0, slots: a.slots }),
    [a.kNew, a.vNew, a.kCache, a.vCache],
    [Math.ceil(rowChunks / TILES.WG), rowsWritten],
  );
}

/**
 * The batched step's write (continuous batching): row t of kNew / vNew goes to its own
 * sequence's region of the pool, row seq * slots + pos % slots, with (pos, seq) from the batch
 * descriptor `batchRows` (kernels/batch_rows.ts). Runs after the step's attention.
 */
export function kvWriteRows(
  enc: Encoder,
  a: { kNew: Binding; vNew: Binding; kCache: Binding; vCache: Binding; tokens: number; kvHeads: number; headDim: number; slots: number; dtype: KvCacheDtype } & BatchRowsArg,
): void {
  if (a.tokens === 0) return;
  if (a.slots < 1) throw new Error(`kvWriteRows: slots must be positive, got ${a.slots}`);
  if (a.headDim % 4 !== 0) throw new Error(`kvWriteRows: headDim must be a multiple of 4, got ${a.headDim}`);
  const rowChunks = (a.kvHeads * a.headDim) / 4;
  const pipeline = getPipeline(enc.gpu, source(a.dtype), 'batch_rows', TILES, `kv_write_rows_${a.dtype}`);
  const uniforms = PARAMS.pack({ rowChunks, firstRow: 0, pos0: 0, slots: a.slots }); // firstRow, pos0: unused by `batch_rows`
  enc.dispatch(pipeline, uniforms, [a.kNew, a.vNew, a.kCache, a.vCache, a.batchRows], [Math.ceil(rowChunks / TILES.WG), a.tokens]);
}
