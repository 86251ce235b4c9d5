/**
 * The front of each decoder block as few dispatches as the plan allows (plan.fuse):
 *
 *   attention block:  h = rms_norm(x);  q, k, v = h q_proj^T, h k_proj^T, h v_proj^T
 *   MLP block:        h = rms_norm(x);  y = silu(h gate_proj^T) * (h up_proj^T)
 *
 *   fuse=none:      rmsnorm, then q_proj, k_proj, v_proj as three matvecs (MLP: rmsnorm, swiglu);
 *   fuse=qkv:       rmsnorm, then one dispatch for all three (MLP as none);
 *   fuse=norm+qkv:  one dispatch each, the norm folded in (fused_*.wgsl): no h at all.
 *
 * Fusion is a decode matter: prefill (more than MATVEC_MAX_TOKENS tokens), 2..8 tokens under
 * matvec=rows (the token-tiled kernel), widths not a multiple of 8, matrices split into parts
 * a workgroup reduction past the device's workgroup memory and quantized weights (q8, q4) all
 * run the separate dispatches, the same math.
 * A batched step (`batch`, continuous batching) must give a row the same bits whatever else is in
 * it, so it fuses only where the fused kernel sums a row as every count of the step does:
 * a batched prefill step never; a batched decode step under matvec=subgroup|workgroup takes
 * fused_lanes.wgsl's 8-token tile for any count (the norm folded in under norm+qkv), and under
 * matvec=rows q/k/v in one dispatch for one row (fused_rows.wgsl, the norm its own dispatch:
 * its fma chains are matvec_rows.wgsl's, so 2..8 rows there, three dispatches, add alike)
 * and SwiGLU unfused. A one-sequence decode step thus runs forward()'s kernels under fuse=qkv.
 * Kernels: fused_lanes.wgsl (matvec=subgroup|workgroup), fused_rows.wgsl (matvec=rows); which runs
 * for each shape class is the kernel table's (../table.ts, frontKernel); weights are read through
 * weights.wgsl as in every matvec.
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, type Binding } from '../../gpu/encoder.ts';
import { createStorageBuffer, isGgmlBlocks, isQuantized, matrixRowBytes, type GpuMatrix } from '../../gpu/buffers.ts';
import { formatConstant } from '../weights.ts';
import { rmsNorm } from '../rmsnorm.ts';
import { frontKernel, kernelModule, productShape, type BatchShape, type FrontKernel, type FusePlan } from '../table.ts';
import { matmul, matmulSwiGLU } from './index.ts';

/** The `Params` struct of fused_lanes.wgsl and fused_rows.wgsl (fused_products.wgsl). */
const PARAMS = new UniformLayout({
  cols: 'u32', tokens: 'u32', groups_x: 'u32', eps: 'f32',
  rows0: 'u32', rows1: 'u32', rows2: 'u32', group1: 'u32', group2: 'u32',
});

type Op = 'qkv' | 'swiglu';
/** The rms_norm of a block: its weight (f32 [hidden_size]) and rms_norm_eps. */
type Norm = { weight: Binding; eps: number };

/**
 * The table's fused kernel for these matrices, or null when the separate dispatches must run:
 * the fused kernels read f32/f16/bf16 weights of one width (a multiple of 8), each matrix in one part.
 */
function fusedKernel(enc: Encoder, op: Op, plan: FusePlan, ms: GpuMatrix[], tokens: number, batch?: BatchShape, writeH?: boolean): { kernel: FrontKernel; norm: boolean } | null {
  const [w] = ms as [GpuMatrix];
  const sameInput = ms.every((m) => m.cols === w.cols && m.dtype === w.dtype && m.parts.length === 1);
  if (!sameInput || isQuantized(w.dtype) || isGgmlBlocks(w.dtype) || w.cols % 8 !== 0) return null;
  return frontKernel(op, plan, productShape(tokens, batch), enc.gpu.profile, writeH);
}

/** The pipeline of a fused kernel for weights of `dtype`, labelled as the profiler shows it. */
function pipelineOf(enc: Encoder, op: Op, f: { kernel: FrontKernel; norm: boolean }, dtype: GpuMatrix['dtype']): GPUComputePipeline {
  const label = `${op}${f.norm ? ' norm' : ''} ${f.kernel.variant} ${dtype}`;
  const src = kernelSource(kernelModule(f.kernel), PARAMS);
  return getPipeline(enc.gpu, src, f.kernel.entries[0]!, { ...formatConstant(dtype), ...f.kernel.constants }, label);
}

/** Two disjoint 4-byte ranges of one scratch buffer per device: SwiGLU's never-written k and v bindings. */
const scratch = new WeakMap<Encoder['gpu'], GPUBuffer>();
/** A storage binding offset every device accepts (WebGPU caps minStorageBufferOffsetAlignment at 256). */
const SCRATCH_OFFSET = 256;
function unusedOutputs(enc: Encoder): [Binding, Binding] {
  let b = scratch.get(enc.gpu);
  if (!b) {
    b = createStorageBuffer(enc.gpu, SCRATCH_OFFSET + 4, 'fused-unused-outputs');
    scratch.set(enc.gpu, b);
  }
  return [{ buffer: b, offset: 0, size: 4 }, { buffer: b, offset: SCRATCH_OFFSET, size: 4 }];
}

/**
 * Splits G workgroups into a grid no dimension of which exceeds the device's limit, with one
 * layer along z per block of `tokensPerGroup` tokens (a decode step wider than the kernel's tile).
 */
function grid(enc: Encoder, groups: number, tokens: number, tokensPerGroup: number): [number, number, number] {
  const gx = Math.min(groups, enc.gpu.report.limits.maxComputeWorkgroupsPerDimension);
  return [gx, Math.ceil(groups / gx), Math.ceil(tokens / tokensPerGroup)];
}

/**
 * q, k, v = h q_proj^T, h k_proj^T, h v_proj^T with h = rms_norm(x) (HF MistralRMSNorm).
 * x: f32 [tokens, hidden_size]; q, k, v: f32 [tokens, rows of each projection]. `h`
 * ([tokens, hidden_size]) receives the norm when it runs as its own dispatch (the plan, or writeH).
 */
export function normQKV(
  enc: Encoder,
  a: {
    x: Binding; norm: Norm; h: Binding; q_proj: GpuMatrix; k_proj: GpuMatrix; v_proj: GpuMatrix; q: Binding; k: Binding; v: Binding;
    tokens: number; plan: FusePlan; batch?: BatchShape;
    /** h is read afterwards (a LoRA adapter's updates): the norm then runs as its own dispatch. */
    writeH?: boolean;
  },
): void {
  const { tokens, plan } = a;
  if (tokens === 0) return;
  const ms = [a.q_proj, a.k_proj, a.v_proj];
  const fused = fusedKernel(enc, 'qkv', plan, ms, tokens, a.batch, a.writeH);
  if (!fused || !fused.norm) {
    rmsNorm(enc, { x: a.x, weight: a.norm.weight, y: a.h, tokens, dim: a.q_proj.cols, eps: a.norm.eps });
  }
  if (!fused) {
    matmul(enc, { x: a.h, w: a.q_proj, y: a.q, tokens, plan, batch: a.batch });
    matmul(enc, { x: a.h, w: a.k_proj, y: a.k, tokens, plan, batch: a.batch });
    matmul(enc, { x: a.h, w: a.v_proj, y: a.v, tokens, plan, batch: a.batch });
    return;
  }
  const folded = fused.norm;
  const [q, k, v] = ms as [GpuMatrix, GpuMatrix, GpuMatrix];
  const groups = ms.map((m) => Math.ceil(m.rows / fused.kernel.rowsPerGroup)) as [number, number, number];
  const pipeline = pipelineOf(enc, 'qkv', fused, q.dtype);
  const [gx, gy, gz] = grid(enc, groups[0] + groups[1] + groups[2], tokens, fused.kernel.tokensPerGroup);
  const params = PARAMS.pack({
    cols: q.cols, tokens, groups_x: gx, eps: a.norm.eps,
    rows0: q.rows, rows1: k.rows, rows2: v.rows, group1: groups[0], group2: groups[0] + groups[1],
  });
  const rows = q.rows + k.rows + v.rows;
  const bytes = rows * matrixRowBytes(q.dtype, q.cols) + tokens * q.cols * 4 + (folded ? q.cols * 4 : 0) + tokens * rows * 4;
  const x = folded ? a.x : a.h;
  enc.dispatch(pipeline, params, [x, a.norm.weight, q.parts[0]!.buffer, a.q, k.parts[0]!.buffer, a.k, v.parts[0]!.buffer, a.v], [gx, gy, gz], {
    bytes,
    shape: `${q.rows}+${k.rows}+${v.rows}x${q.cols}`,
  });
}

/**
 * y = silu(h gate_proj^T) * (h up_proj^T) with h = rms_norm(x): the MLP's front half.
 * x: f32 [tokens, hidden_size]; y: f32 [tokens, intermediate_size]. `h` as in normQKV.
 */
export function normSwiGLU(
  enc: Encoder,
  a: { x: Binding; norm: Norm; h: Binding; gate: GpuMatrix; up: GpuMatrix; y: Binding; tokens: number; plan: FusePlan; batch?: BatchShape },
): void {
  const { tokens, plan, gate, up } = a;
  if (tokens === 0) return;
  const fused = gate.rows === up.rows ? fusedKernel(enc, 'swiglu', plan, [gate, up], tokens, a.batch) : null;
  if (!fused) {
    rmsNorm(enc, { x: a.x, weight: a.norm.weight, y: a.h, tokens, dim: gate.cols, eps: a.norm.eps });
    matmulSwiGLU(enc, { x: a.h, gate, up, y: a.y, tokens, plan, batch: a.batch });
    return;
  }
  const pipeline = pipelineOf(enc, 'swiglu', fused, gate.dtype);
  const [gx, gy, gz] = grid(enc, Math.ceil(gate.rows / fused.kernel.rowsPerGroup), tokens, fused.kernel.tokensPerGroup);
  const params = PARAMS.pack({ cols: gate.cols, tokens, groups_x: gx, eps: a.norm.eps, rows0: gate.rows, rows1: 0, rows2: 0, group1: 0, group2: 0 });
  const bytes = 2 * gate.rows * matrixRowBytes(gate.dtype, gate.cols) + (tokens + 1) * gate.cols * 4 + tokens * gate.rows * 4;
  // The kernel's one entry point names qkv's bindings too: gate_proj again as v_proj, and two
  // scratch words as k and v (writable bindings may not alias), never written under MATRICES 2.
  const [k, v] = unusedOutputs(enc);
  enc.dispatch(pipeline, params, [a.x, a.norm.weight, gate.parts[0]!.buffer, a.y, up.parts[0]!.buffer, k, gate.parts[0]!.buffer, v], [gx, gy, gz], {
    bytes,
    shape: `2x${gate.rows}x${gate.cols}`,
  });
}
