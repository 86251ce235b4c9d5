/**
 * Matrix products against weight matrices: every linear layer of the model
 * (q/k/v/o_proj, down_proj, lm_head) is `y = x W^T` with W in Hugging Face layout
 * [out_features, in_features], and Mistral's MLP front half is the fused
 * `silu(x gate_proj^T) * (x up_proj^T)`. This is the hot path of inference: decode reads
 * every weight once per token, so these kernels' speed is the model's speed.
 *
 * Variants, chosen by the kernel plan (src/kernels/plan.ts), the weight format and the shape
 * class of the call: the kernel table (../table.ts, productKernel) names the one kernel for each,
 * with its tile sizes (TILES); `openchat info --kernels` prints them for a device's plan. In short:
 *   - cols not a multiple of 8 (tests only): gemm_words.wgsl, any token count;
 *   - more than MATVEC_MAX_TOKENS tokens (prefill), any weight format: plan.gemm
 *       regtile:   gemm_regtile.wgsl (8-token register tiles, lanes share a row's columns);
 *       broadcast: gemm_broadcast.wgsl (x shared by subgroup broadcast);
 *       tiled:     gemm_tiled.wgsl (workgroup-memory tiles, register blocks; GPUs), with a
 *                  K split and gemm_split_reduce.wgsl when the row tiles cannot fill the GPU;
 *     each reads its weights through the reader of the format, bound to its <weight_reader>:
 *     gemm_read_dense.wgsl (f32/f16/bf16) or gemm_read_quant.wgsl (q8/q4), so one loop per strategy;
 *   - up to MATVEC_MAX_TOKENS tokens (decode): plan.matvec
 *       rows:      matvec_rows.wgsl (TOKENS 1) for one token, gemm_regtile.wgsl for 2..8;
 *       subgroup:  matvec_lanes.wgsl, <reduce> = reduce_subgroup.wgsl (lanes.wgsl: the frame it
 *                  shares with qmatvec_lanes.wgsl);
 *       workgroup: matvec_lanes.wgsl, <reduce> = reduce_workgroup.wgsl;
 *   - a batched step (`batch`, continuous batching): one shape whatever the count, 'prefill'
 *     the plan's gemm (tiled with its `many` tile), 'decode' matvec_rows.wgsl with its token
 *     loop (TOKENS 8 for 2..8 tokens; plan rows) or matvec_lanes.wgsl's 8-token tile (see BatchShape).
 * llama.cpp's block formats (q4_k, q6_k, ...: GGUF files, src/kernels/ggml/pack.ts; cols whole
 * blocks) run the same cells as q8/q4 below with ggml/'s twins of their kernels
 * (ggml/matvec_rows.wgsl, ggml/matvec_lanes.wgsl, and gemm_read_ggml.wgsl as the gemm's reader),
 * the format's decode file bound to <ggml_format>.
 * Quantized weights (q8, q4: src/kernels/quant.ref.ts; cols % 32 == 0), decoded by quant.wgsl:
 *   - prefill (more than MATVEC_MAX_TOKENS tokens, and batched prefill steps): the plan's gemm
 *     above, reading through gemm_read_quant.wgsl;
 *   - up to MATVEC_MAX_TOKENS tokens and any batched decode step, plan.matvec rows:
 *     qmatvec_rows.wgsl (x by subgroup broadcast), its token loop compiled for 1 token alone and
 *     for 8 otherwise (the same chain per token); on an adapter without subgroups of 8 or more
 *     lanes, qmatvec_lanes.wgsl as under matvec=workgroup;
 *   - otherwise qmatvec_lanes.wgsl + the plan's reduction, one token, or blocks of 8 tokens
 *     for 2..8 tokens and for any count in a batched decode step.
 * Every kernel .wgsl file here has one entry point, `main`, and one loop for both products: its
 * MATRICES override is 1 for matmul and 2 for SwiGLU (gate and up in one pass), so the other
 * product's code compiles away. The bindings are declared once in the files they include:
 * 0 Params (params.wgsl), 1 x, 2 w (or gate), 3 y, 4 up (products.wgsl; matmul binds w there
 * too, see partBindings); except gemm_words.wgsl (x and w by smaller words, matmul only),
 * gemm_split_reduce.wgsl (its own Params and bindings) and fused_*.wgsl, the decode variants of
 * plan.fuse (q/k/v in one dispatch, rms_norm folded in), wrapped by fused.ts.
 */
import { Encoder, getPipeline, kernelSource, UniformLayout, type Binding } from '../../gpu/encoder.ts';
import { createStorageBuffer, ggmlBlockValues, isGgmlBlocks, isQuantized, matrixRowBytes, type GpuMatrix } from '../../gpu/buffers.ts';
import { formatConstant } from '../weights.ts';
import { kernelModule, productKernel, productShape, type BatchShape, type MatmulPlan, type ProductKernel } from '../table.ts';

// The table's, for this module's callers.
export { MATVEC_MAX_TOKENS } from '../table.ts';
export type { BatchShape, MatmulPlan } from '../table.ts';

/**
 * The `Params` struct of every product kernel here (params.wgsl; checked against the WGSL once
 * per source): each kernel reads the fields it needs, every dispatch fills them all.
 */
const PARAMS = new UniformLayout({
  rows: 'u32', cols: 'u32', tokens: 'u32', y_stride: 'u32', y_offset: 'u32', accumulate: 'u32',
  groups_x: 'u32', splits: 'u32', split_chunks: 'u32',
});
/** gemm_split_reduce.wgsl's, a pass over partial sums rather than a product. */
const REDUCE_PARAMS = new UniformLayout({ rows: 'u32', tokens: 'u32', y_stride: 'u32', y_offset: 'u32', accumulate: 'u32', splits: 'u32' });
/**
 * Workgroups a tiled product should reach before its K is split: about two per SM of a
 * 132-SM H100/H200. Software adapters never split (a few workgroups fill a CPU).
 */
const GEMM_TARGET_WORKGROUPS = 264;
/** Most K ranges of a split, and fewest KT steps each keeps. */
const MAX_SPLITS = 16;
const MIN_SPLIT_STEPS = 4;

type Op = 'matmul' | 'swiglu';

type ProductArgs = { x: Binding; w: GpuMatrix; up?: GpuMatrix; y: Binding; tokens: number; accumulate: boolean; splits?: number; batch?: BatchShape };

/**
 * K ranges for a tiled product of `rowTiles` row tiles and `steps` KT steps: enough that the
 * row tiles alone reach GEMM_TARGET_WORKGROUPS on a GPU. It depends on the matrix, never on the
 * token count, so a token's sums do not depend on how many tokens share its chunk.
 */
export function gemmSplits(kind: 'software' | 'hardware', rowTiles: number, steps: number): number {
  if (kind === 'software') return 1;
  const wanted = Math.ceil(GEMM_TARGET_WORKGROUPS / rowTiles);
  return Math.max(1, Math.min(wanted, MAX_SPLITS, Math.floor(steps / MIN_SPLIT_STEPS)));
}

/** Scratch for K-split partial sums, one per device, grown on demand (dispatches in one pass run in order, so products share it). */
const splitScratch = new WeakMap<Encoder['gpu'], GPUBuffer>();
function partials(enc: Encoder, bytes: number): GPUBuffer {
  let b = splitScratch.get(enc.gpu);
  if (!b || b.size < bytes) {
    // The old buffer may still be bound by recorded dispatches: left to the garbage collector, not destroyed.
    b = createStorageBuffer(enc.gpu, Math.max(bytes, b ? b.size * 2 : 0), 'gemm-split-partials');
    splitScratch.set(enc.gpu, b);
  }
  return b;
}

/**
 * The storage bindings of part `i` of a product through kernel `k`: x, the part's weights, y,
 * and (SwiGLU) up's part at the same rows. A kernel with both products in one entry point
 * (a MATRICES constant) names `up` in its code, so matmul binds its own weights there too,
 * never read (MATRICES 1 compiles the reads away).
 */
function partBindings(k: ProductKernel, a: ProductArgs, i: number): Binding[] {
  const part = a.w.parts[i]!;
  const storage: Binding[] = [a.x, part.buffer, a.y];
  if (a.up) {
    const u = a.up.parts[i];
    if (!u || u.row0 !== part.row0 || u.rows !== part.rows) throw new Error('matmulSwiGLU: gate and up are split differently');
    storage.push(u.buffer);
  } else if (k.constants.MATRICES !== undefined) {
    storage.push(part.buffer);
  }
  return storage;
}

/** The Params of a part (no K split; groups_x for a 1-D grid), and what its dispatch moves. */
function partParams(a: ProductArgs, part: GpuMatrix['parts'][number]) {
  const { w, tokens } = a;
  const fields = {
    rows: part.rows, cols: w.cols, tokens, y_stride: w.rows, y_offset: part.row0, accumulate: a.accumulate ? 1 : 0,
    groups_x: 0, splits: 1, split_chunks: 0,
  };
  const bytes = (a.up ? 2 : 1) * part.rows * matrixRowBytes(w.dtype, w.cols) + tokens * w.cols * 4 + tokens * part.rows * 4 * (a.accumulate ? 2 : 1);
  return { fields, cost: { bytes, shape: `${w.rows}x${w.cols}` } };
}

/** gemm_tiled.wgsl (`k`, the table's tile), part by part, with its K split and reduce pass when the split is > 1. */
function recordTiled(enc: Encoder, op: Op, k: ProductKernel, a: ProductArgs): void {
  const { w, tokens } = a;
  const tile = { TM: k.tokensPerGroup, TN: k.rowsPerGroup, KT: k.constants.KT! };
  // A quantized block (a group of 32) must not straddle a KT step, so neither can it a K range.
  if ((isQuantized(w.dtype) || isGgmlBlocks(w.dtype)) && tile.KT % 32 !== 0) throw new Error(`matmul: gemm_tiled's KT (${tile.KT}) must be a multiple of 32 for ${w.dtype} weights`);
  const src = kernelSource(kernelModule(k), PARAMS);
  const constants = { ...formatConstant(w.dtype), ...k.constants };
  const matrices = a.up ? 2 : 1;
  const steps = Math.ceil(w.cols / tile.KT);
  const maxGroups = enc.gpu.report.limits.maxComputeWorkgroupsPerDimension;
  const binding = enc.gpu.report.limits.maxStorageBufferBindingSize;
  w.parts.forEach((part, i) => {
    const rowTiles = Math.ceil(part.rows / tile.TN);
    const tokenTiles = Math.ceil(tokens / tile.TM);
    if (rowTiles > maxGroups || tokenTiles > maxGroups) throw new Error(`matmul: ${part.rows} rows x ${tokens} tokens need more than ${maxGroups} workgroups per dimension`);
    let splits = a.splits ?? gemmSplits(enc.gpu.profile.kind, rowTiles, steps);
    if (!Number.isInteger(splits) || splits < 1) throw new Error(`matmul: splits must be a positive integer, got ${splits}`);
    // Keep the partials within one binding.
    splits = Math.max(1, Math.min(splits, steps, Math.floor(binding / (matrices * tokens * part.rows * 4))));
    const stepsPerSplit = Math.ceil(steps / splits);
    splits = Math.ceil(steps / stepsPerSplit);
    const storage = partBindings(k, a, i);
    const { fields, cost } = partParams(a, part);
    const params = PARAMS.pack({ ...fields, splits, split_chunks: stepsPerSplit * (tile.KT / 8) });
    const name = `${op} ${k.variant}${splits > 1 ? ' split' : ''} ${w.dtype}`;
    const pipeline = getPipeline(enc.gpu, src, k.entries[0]!, { ...constants, SPLIT: splits > 1 ? 1 : 0 }, name);
    if (splits === 1) {
      enc.dispatch(pipeline, params, storage, [rowTiles, tokenTiles], cost);
      return;
    }
    const scratch = partials(enc, splits * matrices * tokens * part.rows * 4);
    storage[2] = scratch;
    enc.dispatch(pipeline, params, storage, [rowTiles, tokenTiles, splits], cost);
    const r = k.splitReduce!;
    const reduce = getPipeline(enc.gpu, kernelSource(kernelModule(r), REDUCE_PARAMS), r.entries[0]!, r.constants, `${op} ${r.variant}`);
    const outputs = tokens * part.rows;
    const groups = Math.ceil(outputs / r.constants.WG!);
    if (groups > maxGroups) throw new Error(`matmul: a K split of ${outputs} outputs needs more than ${maxGroups} workgroups`);
    const reduceFields = { rows: part.rows, tokens, y_stride: w.rows, y_offset: part.row0, accumulate: a.accumulate ? 1 : 0, splits };
    enc.dispatch(reduce, REDUCE_PARAMS.pack(reduceFields), [scratch, a.y], [groups], { bytes: (splits * matrices + 1) * outputs * 4, shape: cost.shape });
  });
}

/**
 * Dispatches row kernel `k` once per part of a.w: workgroups (row groups, token blocks), or
 * (groups_x, rows, token blocks) for the `lanes` grid, whose row groups lie on a 2-D grid.
 */
function dispatchParts(enc: Encoder, op: Op, k: ProductKernel, a: ProductArgs): void {
  const pipeline = getPipeline(enc.gpu, kernelSource(kernelModule(k), PARAMS), k.entries[0]!, { ...formatConstant(a.w.dtype), ...k.constants }, `${op} ${k.variant} ${a.w.dtype}`);
  const lanes = k.grid === 'lanes';
  const maxGroups = enc.gpu.report.limits.maxComputeWorkgroupsPerDimension;
  const tokenGroups = Math.ceil(a.tokens / k.tokensPerGroup);
  a.w.parts.forEach((part, i) => {
    const groups = Math.ceil(part.rows / k.rowsPerGroup);
    const gx = lanes ? Math.min(groups, maxGroups) : groups;
    const grid: [number, number, number] = lanes ? [gx, Math.ceil(groups / gx), tokenGroups] : [groups, tokenGroups, 1];
    const { fields, cost } = partParams(a, part);
    enc.dispatch(pipeline, PARAMS.pack({ ...fields, groups_x: gx }), partBindings(k, a, i), grid, cost);
  });
}

/** Records the dispatches of one product, part by part (gate and up are split at the same rows), through the table's kernel. */
function record(enc: Encoder, op: Op, plan: MatmulPlan, a: ProductArgs): void {
  const { w } = a;
  if (isQuantized(w.dtype) && w.cols % 32 !== 0) throw new Error(`matmul: ${w.dtype} weights need cols % 32 == 0, got ${w.cols}`);
  if (isGgmlBlocks(w.dtype) && w.cols % ggmlBlockValues(w.dtype) !== 0) throw new Error(`matmul: ${w.dtype} weights need cols % ${ggmlBlockValues(w.dtype)} == 0, got ${w.cols}`);
  const k = productKernel(op, w, productShape(a.tokens, a.batch), plan, enc.gpu.profile);
  if (k.grid === 'tiles') recordTiled(enc, op, k, a);
  else dispatchParts(enc, op, k, a);
}

/**
 * y[t, r] = sum_c x[t, c] * w[r, c] for t < tokens, r < w.rows; with `accumulate`,
 * y[t, r] += ... (the residual add fused into o_proj / down_proj).
 * x: f32 [tokens, w.cols]; y: f32 [tokens, w.rows].
 * `splits` (gemm=tiled only; tests, benchmarks): K ranges instead of the device's choice.
 * `batch`: the kernel shape of a batched step, whatever its token count (BatchShape).
 */
export function matmul(
  enc: Encoder,
  a: { x: Binding; w: GpuMatrix; y: Binding; tokens: number; accumulate?: boolean; plan: MatmulPlan; splits?: number; batch?: BatchShape },
): void {
  if (a.tokens === 0) return;
  if (a.w.cols % 2 !== 0) throw new Error(`matmul: cols must be even, got ${a.w.cols}`);
  record(enc, 'matmul', a.plan, { x: a.x, w: a.w, y: a.y, tokens: a.tokens, accumulate: a.accumulate ?? false, splits: a.splits, batch: a.batch });
}

/**
 * The fused front half of Mistral's MLP, one pass over both weight matrices:
 * y[t, i] = silu(sum_c x[t, c] gate[i, c]) * (sum_c x[t, c] up[i, c]).
 * x: f32 [tokens, hidden]; gate, up: [intermediate, hidden]; y: f32 [tokens, intermediate].
 * down_proj then runs as a plain matmul with accumulate (the residual add).
 * `batch`: as for matmul.
 */
export function matmulSwiGLU(
  enc: Encoder,
  a: { x: Binding; gate: GpuMatrix; up: GpuMatrix; y: Binding; tokens: number; plan: MatmulPlan; splits?: number; batch?: BatchShape },
): void {
  const { gate, up } = a;
  if (a.tokens === 0) return;
  if (gate.rows !== up.rows || gate.cols !== up.cols || gate.dtype !== up.dtype) {
    throw new Error(`matmulSwiGLU: gate [${gate.rows}, ${gate.cols}] ${gate.dtype} and up [${up.rows}, ${up.cols}] ${up.dtype} differ`);
  }
  if (gate.cols % 8 !== 0) throw new Error(`matmulSwiGLU: hidden size must be a multiple of 8, got ${gate.cols}`);
  record(enc, 'swiglu', a.plan, { x: a.x, w: gate, up, y: a.y, tokens: a.tokens, accumulate: false, splits: a.splits, batch: a.batch });
}
