/**
 * RMSNorm on the device: normalises each token's hidden vector by its root mean
 * square, then scales it by a learned per-feature weight (Mistral's
 * `input_layernorm`, `post_attention_layernorm` and final `norm`).
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, wgsl, type Binding } from '../gpu/encoder.ts';

const PARAMS = new UniformLayout({ dim: 'u32', eps: 'f32' });

/** y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight, for t < tokens. */
export function rmsNorm(
  enc: Encoder,
  a: { x: Binding; weight: Binding; y: Binding; tokens: number; dim: number; eps: number },
): void {
  if (a.tokens === 0) return;
  if (!(a.dim >= 1)) throw new Error(`rmsNorm: dim must be positive, got ${a.dim}`);
  const pipeline = getPipeline(enc.gpu, kernelSource(wgsl('rmsnorm.wgsl', import.meta.url), PARAMS), 'main', {}, 'rmsnorm');
  // One workgroup per token row (see rmsnorm.wgsl).
  enc.dispatch(pipeline, PARAMS.pack({ dim: a.dim, eps: a.eps }), [a.x, a.weight, a.y], [a.tokens], { bytes: (2 * a.tokens + 1) * a.dim * 4 });
}
