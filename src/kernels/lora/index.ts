/**
 * LoRA on the device: y += scale * (x A^T) B^T beside a projection y = x W^T, as two
 * small products (lora.wgsl), never merged into W, so that one base model on the device
 * serves every loaded adapter and each forward pass picks one (or none).
 *
 * Why a kernel of its own rather than the weight matmul: the two products have shapes the
 * weight kernels are not built for (lora_A has only `rank` rows; lora_B's rows are `rank`
 * columns long, any rank, odd ones too), the scale is applied in the kernel so B stays as
 * loaded, and the adapters' f32 matrices need no dtype variants. The extra work is
 * rank * (in + out) multiply-adds per token and projection, against in * out for W.
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, wgsl, type Binding } from '../../gpu/encoder.ts';

/** One adapted projection on the device: lora_A [rank, inFeatures], lora_B [outFeatures, rank], f32. */
export interface LoraMatrices {
  a: GPUBuffer;
  b: GPUBuffer;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  /** lora_alpha / rank, or lora_alpha / sqrt(rank) with rsLoRA. */
  scale: number;
}

/** Invocations per workgroup in lora.wgsl and silu_mul.wgsl. */
const WG = 64;
/** The `Params` structs of lora.wgsl and silu_mul.wgsl (checked against the WGSL once). */
const PARAMS = new UniformLayout({ rows: 'u32', cols: 'u32', tokens: 'u32', accumulate: 'u32', scale: 'f32' });
const SILU_PARAMS = new UniformLayout({ n: 'u32' });

function product(
  enc: Encoder,
  entry: 'wide' | 'narrow',
  a: { x: Binding; m: GPUBuffer; y: Binding; rows: number; cols: number; tokens: number; scale: number; accumulate: boolean },
): void {
  const pipeline = getPipeline(enc.gpu, kernelSource(wgsl('lora.wgsl', import.meta.url), PARAMS), entry, {}, `lora ${entry}`);
  const groups = entry === 'wide' ? a.rows : Math.ceil(a.rows / WG);
  const fields = { rows: a.rows, cols: a.cols, tokens: a.tokens, accumulate: a.accumulate ? 1 : 0, scale: a.scale };
  const bytes = (a.rows * a.cols + a.tokens * a.cols + a.tokens * a.rows * (a.accumulate ? 2 : 1)) * 4;
  enc.dispatch(pipeline, PARAMS.pack(fields), [a.x, a.m, a.y], [groups, a.tokens], { bytes, shape: `${a.rows}x${a.cols}` });
}

/**
 * y[t, :] += scale * (x[t, :] A^T) B^T for t < tokens, when `lora` is given (nothing
 * otherwise, so the call can sit beside every projection). x: f32 [tokens, inFeatures];
 * y: f32 [tokens, outFeatures]; u: scratch of at least tokens * rank f32.
 */
export function loraUpdate(enc: Encoder, a: { x: Binding; lora: LoraMatrices | undefined; y: Binding; u: Binding; tokens: number }): void {
  const l = a.lora;
  if (!l || a.tokens === 0) return;
  product(enc, 'wide', { x: a.x, m: l.a, y: a.u, rows: l.rank, cols: l.inFeatures, tokens: a.tokens, scale: 1, accumulate: false });
  product(enc, 'narrow', { x: a.u, m: l.b, y: a.y, rows: l.outFeatures, cols: l.rank, tokens: a.tokens, scale: l.scale, accumulate: true });
}

/** gate[i] = silu(gate[i]) * up[i] for i < n (see silu_mul.wgsl). */
export function siluMul(enc: Encoder, a: { gate: Binding; up: Binding; n: number }): void {
  if (a.n === 0) return;
  const pipeline = getPipeline(enc.gpu, kernelSource(wgsl('silu_mul.wgsl', import.meta.url), SILU_PARAMS), 'main', {}, 'silu_mul');
  enc.dispatch(pipeline, SILU_PARAMS.pack({ n: a.n }), [a.gate, a.up], [Math.ceil(a.n / WG)], { bytes: 3 * a.n * 4 });
}
