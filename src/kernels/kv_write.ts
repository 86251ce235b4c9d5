/**
 * Appends a chunk's keys and values (after RoPE) to the layer's rolling KV cache.
 * Position j lives in slot j % slots; with slots = sliding_window the cache never
 * grows, and a slot is overwritten exactly when its key leaves every later query's window.
 */
import { Encoder, getPipeline, params, wgsl, type Binding } from '../gpu/encoder.ts';

const WORKGROUP = 64; // must match @workgroup_size in kv_write.wgsl

export function kvWrite(
  enc: Encoder,
  a: { kNew: Binding; vNew: Binding; kCache: Binding; vCache: Binding; tokens: number; pos0: number; kvHeads: number; headDim: number; slots: number },
): void {
  if (a.tokens === 0) return;
  if (a.slots < 1) throw new Error(`kvWrite: slots must be positive, got ${a.slots}`);
  const rowLen = a.kvHeads * a.headDim;
  const rowsWritten = Math.min(a.tokens, a.slots);
  const pipeline = getPipeline(enc.gpu, wgsl('kv_write.wgsl', import.meta.url), 'main', {}, 'kv_write');
  enc.dispatch(
    pipeline,
    params([rowLen, a.tokens - rowsWritten, a.pos0, a.slots]),
    [a.kNew, a.vNew, a.kCache, a.vCache],
    [Math.ceil(rowLen / WORKGROUP), rowsWritten],
  );
}
