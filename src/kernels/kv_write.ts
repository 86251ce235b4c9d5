/**
 * Appends a chunk's keys and values (after RoPE) to the layer's rolling KV cache.
 * Position j lives in slot j % slots; with slots = sliding_window the cache never
 * grows, and a slot is overwritten exactly when its key leaves every later query's window.
 * The cache is f32 or f16 (`dtype`, chosen at model load); the chunk is always f32.
 */
import { Encoder, getPipeline, params, type Binding } from '../gpu/encoder.ts';
import { kvKernelSource, type KvCacheDtype } from './kv_cache.ts';

const WORKGROUP = 64; // must match @workgroup_size in kv_write.wgsl

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
  const pipeline = getPipeline(enc.gpu, kvKernelSource(a.dtype, 'kv_write.wgsl', import.meta.url), 'main', {}, `kv_write_${a.dtype}`);
  enc.dispatch(
    pipeline,
    params([rowChunks, a.tokens - rowsWritten, a.pos0, a.slots]),
    [a.kNew, a.vNew, a.kCache, a.vCache],
    [Math.ceil(rowChunks / WORKGROUP), rowsWritten],
  );
}
