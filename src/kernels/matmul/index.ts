/**
 * Matrix products against weight matrices: every linear layer of the model
 * (q/k/v/o_proj, down_proj, lm_head) is `y = x W^T` with W in Hugging Face layout
 * [out_features, in_features], and Mistral's MLP front half is the fused
 * `silu(x gate_proj^T) * (x up_proj^T)`. This is the hot path of inference: decode reads
 * every weight once per token, so these kernels' speed is the model's speed.
 *
 * Variants, chosen by the kernel plan (src/kernels/plan.ts), the weight format and the shape:
 *   - cols not a multiple of 8 (tests only): gemm_words.wgsl, any token count;
 *   - more than MATVEC_MAX_TOKENS tokens (prefill), any weight format: plan.gemm
 *       regtile:   gemm_regtile.wgsl (8-token register tiles, lanes share a row's columns);
 *       broadcast: gemm_broadcast.wgsl (+ subgroups.wgsl: x shared by subgroup broadcast);
 *       tiled:     gemm_tiled.wgsl (workgroup-memory tiles, register blocks; GPUs), with a
 *                  K split and gemm_split_reduce.wgsl when the row tiles cannot fill the GPU;
 *     each read its weights through the reader of the format (gemmReader): gemm_read_dense.wgsl
 *     (f32/f16/bf16) or gemm_read_quant.wgsl (q8/q4, after ../quant.wgsl), so one loop per strategy;
 *   - up to MATVEC_MAX_TOKENS tokens (decode): plan.matvec
 *       rows:      matvec_rows.wgsl (TOKENS 1) for one token, gemm_regtile.wgsl for 2..8;
 *       subgroup:  matvec_lanes.wgsl + reduce_subgroup.wgsl (+ lanes.wgsl, the frame it shares
 *                  with qmatvec_lanes.wgsl);
 *       workgroup: matvec_lanes.wgsl + reduce_workgroup.wgsl (+ lanes.wgsl);
 *   - a batched step (`batch`, continuous batching): one shape whatever the count, 'prefill'
 *     the plan's gemm (tiled with its `many` tile), 'decode' matvec_rows.wgsl with its token
 *     loop (TOKENS 8 for 2..8 tokens; plan rows) or matvec_lanes.wgsl's 8-token tile (see BatchShape).
 * Quantized weights (q8, q4: src/kernels/quant.ref.ts; cols % 32 == 0), decoded by quant.wgsl:
 *   - prefill (more than MATVEC_MAX_TOKENS tokens, and batched prefill steps): the plan's gemm
 *     above, reading through gemm_read_quant.wgsl;
 *   - up to MATVEC_MAX_TOKENS tokens and any batched decode step, plan.matvec rows:
 *     qmatvec_rows.wgsl (+ subgroups.wgsl: x by subgroup broadcast), its token loop compiled
 *     for 1 token alone and for 8 otherwise (the same chain per token); on an adapter without
 *     subgroups of 8 or more lanes, qmatvec_lanes.wgsl as under matvec=workgroup;
 *   - otherwise qmatvec_lanes.wgsl + the plan's reduction, one token, or blocks of 8 tokens
 *     for 2..8 tokens and for any count in a batched decode step.
 * Every kernel .wgsl file here holds a `matmul` and a `swiglu` entry point with the same bindings,
 * declared once and prepended by source(): 0 Params (params.wgsl), 1 x, 2 w (or gate), 3 y, 4 up
 * (swiglu only) (products.wgsl; gemm_words.wgsl binds x and w by smaller words);
 * except gemm_split_reduce.wgsl (its own Params and bindings) and fused_*.wgsl, the decode
 * variants of plan.fuse (q/k/v in one dispatch, rms_norm folded in), wrapped by fused.ts.
 */
import { Encoder, getPipeline, UniformLayout, type Binding, type Overrides, type ShaderSource } from '../../gpu/encoder.ts';
import { createStorageBuffer, isQuantized, matrixRowBytes, type GpuMatrix, type MatrixDType, type QuantFormat } from '../../gpu/buffers.ts';
import { dtypeCode, weightKernelSource } from '../weights.ts';
import type { KernelPlan } from '../plan.ts';

/**
 * Tile sizes of every variant: the one source. Each WGSL file declares these names as
 * `override` constants without defaults, so a pipeline cannot be made without them.
 */
export const TILES = {
  /**
   * matvec_rows.wgsl: WG invocations x ROWS whole rows each, for one token and for batched decode
   * steps alike. Measured on lavapipe: bench/RESULTS.md (for batched steps 4 and 2 rows measured
   * no different within the noise of a shared machine).
   */
  rows: { matmul: { WG: 8, ROWS: 6 }, swiglu: { WG: 16, ROWS: 3 } },
  /** matvec_lanes.wgsl: WG lanes across the columns of ROWS rows (of each matrix); TOKENS 1 or 8. */
  lanes: { matmul: { WG: 128, ROWS: 4 }, swiglu: { WG: 128, ROWS: 2 } },
  /** gemm_regtile.wgsl: WG / LANES lane groups of ROWS_PER_GROUP rows x TOKENS tokens. */
  regtile: {
    matmul: { WG: 64, LANES: 8, ROWS_PER_GROUP: 4, TOKENS: 8 },
    swiglu: { WG: 64, LANES: 8, ROWS_PER_GROUP: 2, TOKENS: 8 },
  },
  /** gemm_broadcast.wgsl: WG invocations x ROWS rows each, TOKENS (8 or 16) tokens per workgroup. */
  broadcast: {
    matmul: { WG: 8, ROWS: 2, TOKENS: 16 },
    swiglu: { WG: 8, ROWS: 2, TOKENS: 16 },
  },
  /**
   * gemm_tiled.wgsl: TM tokens x TN rows per workgroup, RM x RN per invocation, KT columns per
   * step; `few` up to FEW_TOKENS tokens, `many` above. swiglu stages two weight tiles, so its
   * TN is halved to stay within WebGPU's default 16 KiB of workgroup memory.
   */
  tiled: {
    matmul: { few: { TM: 16, TN: 64, RM: 2, RN: 4, KT: 32 }, many: { TM: 64, TN: 64, RM: 4, RN: 4, KT: 32 } },
    swiglu: { few: { TM: 16, TN: 32, RM: 2, RN: 2, KT: 32 }, many: { TM: 64, TN: 32, RM: 4, RN: 2, KT: 32 } },
    FEW_TOKENS: 32,
  },
  /** gemm_split_reduce.wgsl: invocations per workgroup. */
  splitReduce: { WG: 64 },
  /** gemm_words.wgsl: ROWS rows x WG * TOKENS_PER_INVOCATION tokens per workgroup. */
  words: { WG: 64, ROWS: 4, TOKENS_PER_INVOCATION: 1 },
  /** qmatvec_rows.wgsl (quantized weights, up to 8 tokens, plan rows): WG invocations x ROWS whole rows (4, 8, 12 measured no faster on lavapipe: bench/RESULTS.md). */
  qrows: { matmul: { WG: 8, ROWS: 6 }, swiglu: { WG: 16, ROWS: 3 } },
  /**
   * qmatvec_lanes.wgsl (quantized weights): WG lanes across the groups of ROWS rows, TOKENS
   * tokens per workgroup; `decode` for 1 token under the lanes plans, `block` for 2..8 tokens
   * and batched decode steps (any plan; `rows` reduces in workgroup memory with a small
   * workgroup, lavapipe). Quantized prefill runs the plan's gemm (gemm_read_quant.wgsl).
   */
  qlanes: {
    decode: { matmul: { WG: 64, ROWS: 4, TOKENS: 1 }, swiglu: { WG: 64, ROWS: 2, TOKENS: 1 } },
    block: { matmul: { WG: 64, ROWS: 4, TOKENS: 8 }, swiglu: { WG: 64, ROWS: 2, TOKENS: 8 } },
    rowsBlock: { matmul: { WG: 8, ROWS: 4, TOKENS: 8 }, swiglu: { WG: 8, ROWS: 2, TOKENS: 8 } },
  },
} as const;

/** The most tokens the decode (matvec) kernels take in one call; more run as prefill. */
export const MATVEC_MAX_TOKENS = 8;
/**
 * From this many rows a decode step takes the gemm where it adds a row as the matvec does
 * (gemmSumsAsMatvec): below, matvec_rows' token loop is cheaper; from here the gemm's shared x
 * tiles are (bench/RESULTS.md, "One pass").
 */
export const DECODE_GEMM_MIN_TOKENS = 5;

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

const checked = new WeakSet<ShaderSource>();
/**
 * Kernel `file` with `snippets` before it and what the product kernels share: params.wgsl
 * (Params), products.wgsl (the vec4 bindings and w8/up8; gemm_words.wgsl binds its own, by
 * smaller words) and sums.wgsl (silu and fma8). gemm_split_reduce.wgsl takes sums.wgsl alone.
 */
function source(file: string, snippets: string[] = []): ShaderSource {
  const reduce = file === 'gemm_split_reduce.wgsl';
  const shared = reduce ? [] : file === 'gemm_words.wgsl' ? ['params.wgsl'] : ['params.wgsl', 'products.wgsl'];
  const s = weightKernelSource(file, import.meta.url, [...snippets, ...shared, 'sums.wgsl']);
  if (!checked.has(s)) {
    (reduce ? REDUCE_PARAMS : PARAMS).check(s.code);
    checked.add(s);
  }
  return s;
}

type Op = 'matmul' | 'swiglu';

/**
 * The weight reader of the gemm kernels for a format: the snippets to prepend (the reader last,
 * before the kernel) and its override constant. One loop per strategy serves every format.
 */
function gemmReader(dtype: MatrixDType): { snippets: string[]; constants: Overrides } {
  if (isQuantized(dtype)) return { snippets: ['../quant.wgsl', 'gemm_read_quant.wgsl'], constants: { QFORMAT: quantCode(dtype) } };
  return { snippets: ['gemm_read_dense.wgsl'], constants: { DTYPE: dtypeCode(dtype) } };
}

/** The QFORMAT override constant of quant.wgsl. */
function quantCode(format: QuantFormat): number {
  return format === 'q8' ? 0 : 1;
}
/** What the matrix products read of the plan; without `gemm`, prefill runs gemm_regtile.wgsl. */
export type MatmulPlan = Pick<KernelPlan, 'matvec'> & Partial<Pick<KernelPlan, 'gemm'>>;

/**
 * The kernel shape of a batched step (continuous batching), whatever its token count, so that a
 * token's sums are added in the same order alone and beside others:
 *  - 'decode' (at most MATVEC_MAX_TOKENS tokens, one per sequence): the plan's matvec with its
 *    token loop inside (matvec_rows.wgsl compiled for 8 tokens, for 1 when one row is alone:
 *    the same chains; or matvec_lanes.wgsl with the 8-token tile), so a batch of decode rows
 *    reads the weights once;
 *  - 'prefill' (prompt chunks): the plan's gemm whatever the count (gemm_tiled with its
 *    `many` tile, gemm_broadcast, or gemm_regtile).
 * A token's result depends on neither the count nor its slot in either; without `batch` the
 * kernel follows the count (matvec_rows for one token, gemm_regtile for 2..8 on plan rows, the
 * plan's gemm above 8), which is faster for one sequence but would tie a row's rounding to its
 * batch.
 */
export type BatchShape = 'decode' | 'prefill';

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

/** The storage bindings of part `i` of a product: x, the part's weights, y, and (SwiGLU) up's part at the same rows. */
function partBindings(a: ProductArgs, i: number): Binding[] {
  const part = a.w.parts[i]!;
  const storage: Binding[] = [a.x, part.buffer, a.y];
  if (a.up) {
    const u = a.up.parts[i];
    if (!u || u.row0 !== part.row0 || u.rows !== part.rows) throw new Error('matmulSwiGLU: gate and up are split differently');
    storage.push(u.buffer);
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

/** gemm_tiled.wgsl, part by part, with its K split and reduce pass when the split is > 1. */
function recordTiled(enc: Encoder, op: Op, a: ProductArgs): void {
  const { w, tokens } = a;
  // A batched prefill step keeps one tile whatever its count (BatchShape).
  const tile = tokens <= TILES.tiled.FEW_TOKENS && a.batch === undefined ? TILES.tiled[op].few : TILES.tiled[op].many;
  // A quantized block (a group of 32) must not straddle a KT step, so neither can it a K range.
  if (isQuantized(w.dtype) && tile.KT % 32 !== 0) throw new Error(`matmul: gemm_tiled's KT (${tile.KT}) must be a multiple of 32 for ${w.dtype} weights`);
  const reader = gemmReader(w.dtype);
  const src = source('gemm_tiled.wgsl', reader.snippets);
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
    const storage = partBindings(a, i);
    const { fields, cost } = partParams(a, part);
    const params = PARAMS.pack({ ...fields, splits, split_chunks: stepsPerSplit * (tile.KT / 8) });
    const name = `${op} tiled ${tile.TM}x${tile.TN}${splits > 1 ? ' split' : ''} ${w.dtype}`;
    const pipeline = getPipeline(enc.gpu, src, op, { ...reader.constants, ...tile, SPLIT: splits > 1 ? 1 : 0 }, name);
    if (splits === 1) {
      enc.dispatch(pipeline, params, storage, [rowTiles, tokenTiles], cost);
      return;
    }
    const scratch = partials(enc, splits * matrices * tokens * part.rows * 4);
    storage[2] = scratch;
    enc.dispatch(pipeline, params, storage, [rowTiles, tokenTiles, splits], cost);
    const reduce = getPipeline(enc.gpu, source('gemm_split_reduce.wgsl'), op, TILES.splitReduce, `${op} split reduce`);
    const outputs = tokens * part.rows;
    const groups = Math.ceil(outputs / TILES.splitReduce.WG);
    if (groups > maxGroups) throw new Error(`matmul: a K split of ${outputs} outputs needs more than ${maxGroups} workgroups`);
    const reduceFields = { rows: part.rows, tokens, y_stride: w.rows, y_offset: part.row0, accumulate: a.accumulate ? 1 : 0, splits };
    enc.dispatch(reduce, REDUCE_PARAMS.pack(reduceFields), [scratch, a.y], [groups], { bytes: (splits * matrices + 1) * outputs * 4, shape: cost.shape });
  });
}

/**
 * A row-owning kernel as record or recordQuantized chose it: a workgroup takes rowsPerGroup
 * rows and tokensPerGroup tokens; `lanes` kernels (matvec_lanes, qmatvec_lanes) lay their row
 * groups out on a 2-D grid of width groups_x, the others along x.
 */
type RowKernel = { pipeline: GPUComputePipeline; rowsPerGroup: number; tokensPerGroup: number; lanes: boolean };

/** Dispatches `k` once per part of a.w: workgroups (row groups, token blocks), or (groups_x, rows, token blocks) for `lanes`. */
function dispatchParts(enc: Encoder, k: RowKernel, a: ProductArgs): void {
  const maxGroups = enc.gpu.report.limits.maxComputeWorkgroupsPerDimension;
  const tokenGroups = Math.ceil(a.tokens / k.tokensPerGroup);
  a.w.parts.forEach((part, i) => {
    const groups = Math.ceil(part.rows / k.rowsPerGroup);
    const gx = k.lanes ? Math.min(groups, maxGroups) : groups;
    const grid: [number, number, number] = k.lanes ? [gx, Math.ceil(groups / gx), tokenGroups] : [groups, tokenGroups, 1];
    const { fields, cost } = partParams(a, part);
    enc.dispatch(k.pipeline, PARAMS.pack({ ...fields, groups_x: gx }), partBindings(a, i), grid, cost);
  });
}

/**
 * Whether the plan's gemm sums each row in the very chain its matvec does, so that a decode step
 * of DECODE_GEMM_MIN_TOKENS rows or more may take the gemm (x shared by subgroup broadcast, 16
 * tokens a tile) and every row still gets its one-token bits: gemm_broadcast.wgsl against matvec_rows.wgsl
 * over 16-bit weights (fma8 for matmul, two dots per chunk for SwiGLU; matmul/batch.test.ts).
 * Elsewhere (the lanes' cross-lane reductions against gemm_tiled's tiles, q8/q4's group sums) a
 * wide decode step runs the matvec kernel over blocks of MATVEC_MAX_TOKENS tokens.
 */
export function gemmSumsAsMatvec(plan: MatmulPlan, w: GpuMatrix): boolean {
  return plan.matvec === 'rows' && plan.gemm === 'broadcast' && !isQuantized(w.dtype) && w.cols % 8 === 0;
}

/** Records the dispatches of one product, part by part (gate and up are split at the same rows). */
function record(
  enc: Encoder,
  op: Op,
  plan: MatmulPlan,
  a: ProductArgs,
): void {
  const { w, tokens } = a;
  if (isQuantized(w.dtype) && w.cols % 32 !== 0) throw new Error(`matmul: ${w.dtype} weights need cols % 32 == 0, got ${w.cols}`);
  // The prefill kernels: above MATVEC_MAX_TOKENS tokens, any count in a batched prefill step, and
  // a decode step of DECODE_GEMM_MIN_TOKENS rows or more where the gemm adds a row as the matvec does.
  const wideDecode = a.batch === 'decode' && tokens >= DECODE_GEMM_MIN_TOKENS && gemmSumsAsMatvec(plan, w);
  const prefill = a.batch === 'prefill' || (a.batch === undefined && tokens > MATVEC_MAX_TOKENS) || wideDecode;
  if (isQuantized(w.dtype) && !prefill) {
    recordQuantized(enc, op, plan, a, w.dtype);
    return;
  }
  if (prefill && w.cols % 8 === 0 && plan.gemm === 'tiled') return recordTiled(enc, op, a);
  const reader = gemmReader(w.dtype);
  // Only the gemm branches below take q8/q4 weights (through `reader`); the others read DTYPE.
  const dtype = (): Overrides => {
    if (isQuantized(w.dtype)) throw new Error(`matmul: no decode kernel here reads ${w.dtype} weights (recordQuantized does)`);
    return { DTYPE: dtypeCode(w.dtype) };
  };
  const matrices = a.up ? 2 : 1;
  let src: ShaderSource;
  let constants: Overrides;
  let rowsPerGroup: number;
  let tokensPerGroup: number;
  let variant: string;
  let lanes = false;
  if (w.cols % 8 !== 0) {
    variant = 'words';
    src = source('gemm_words.wgsl');
    constants = { ...dtype(), ...TILES.words };
    rowsPerGroup = TILES.words.ROWS;
    tokensPerGroup = TILES.words.WG * TILES.words.TOKENS_PER_INVOCATION;
  } else if (prefill && plan.gemm === 'broadcast') {
    const t = TILES.broadcast[op];
    variant = `broadcast x${t.TOKENS}`;
    src = source('gemm_broadcast.wgsl', ['subgroups.wgsl', ...reader.snippets]);
    constants = { ...reader.constants, ...t };
    rowsPerGroup = t.WG * t.ROWS;
    tokensPerGroup = t.TOKENS;
  } else if (prefill || (a.batch === undefined && plan.matvec === 'rows' && tokens > 1)) {
    const t = TILES.regtile[op];
    variant = `regtile x${t.TOKENS}`;
    src = source('gemm_regtile.wgsl', reader.snippets);
    constants = { ...reader.constants, ...t };
    rowsPerGroup = (t.WG / t.LANES) * t.ROWS_PER_GROUP;
    tokensPerGroup = t.TOKENS;
  } else if (plan.matvec === 'rows') {
    // A batched decode step's token loop, compiled for 1 token alone: a token's sums per row
    // (matmul's fma chain, SwiGLU's two dots per chunk) are the same chain either way (batch.test.ts).
    const t = TILES.rows[op];
    const tokenTile = tokens === 1 ? 1 : MATVEC_MAX_TOKENS;
    variant = `matvec rows${tokenTile > 1 ? ` x${tokenTile}` : ''}`;
    src = source('matvec_rows.wgsl');
    constants = { ...dtype(), ...t, TOKENS: tokenTile };
    rowsPerGroup = t.WG * t.ROWS;
    tokensPerGroup = tokenTile;
  } else {
    const t = TILES.lanes[op];
    const snippet = plan.matvec === 'subgroup' ? 'reduce_subgroup.wgsl' : 'reduce_workgroup.wgsl';
    src = source('matvec_lanes.wgsl', [snippet, 'lanes.wgsl']);
    const tokenTile = tokens === 1 && a.batch === undefined ? 1 : MATVEC_MAX_TOKENS;
    variant = `matvec ${plan.matvec}${tokenTile > 1 ? ` x${tokenTile}` : ''}`;
    constants = { ...dtype(), ...t, TOKENS: tokenTile, MATRICES: matrices };
    if (plan.matvec === 'workgroup') {
      const need = matrices * t.ROWS * tokenTile * t.WG * 4;
      const have = enc.gpu.report.limits.maxComputeWorkgroupStorageSize;
      if (need > have) throw new Error(`matvec=workgroup needs ${need} bytes of workgroup memory; this device offers ${have} (use matvec=subgroup or rows)`);
    }
    rowsPerGroup = t.ROWS;
    tokensPerGroup = tokenTile;
    lanes = true;
  }
  const pipeline = getPipeline(enc.gpu, src, op, constants, `${op} ${variant} ${w.dtype}`);
  dispatchParts(enc, { pipeline, rowsPerGroup, tokensPerGroup, lanes }, a);
}

/** `record` for q8/q4 weights below prefill: the matvec kernels that dequantize groups of 32 in registers (quant.wgsl). */
function recordQuantized(
  enc: Encoder,
  op: Op,
  plan: Pick<KernelPlan, 'matvec'>,
  a: ProductArgs,
  format: QuantFormat,
): void {
  const { tokens } = a;
  // A batched step takes one kernel shape whatever its count (qmatvec_rows with its 8-token
  // loop, or the 8-token blocks), so a token's sums never depend on the count.
  const single = tokens === 1 && a.batch === undefined;
  const decode = a.batch === 'decode' || (a.batch === undefined && tokens <= MATVEC_MAX_TOKENS);
  const matrices = a.up ? 2 : 1;
  const q = { QFORMAT: quantCode(format) };
  let src: ShaderSource;
  let constants: Overrides;
  let rowsPerGroup: number;
  let tokensPerGroup: number;
  let variant: string;
  let lanes = true;
  const sizes = enc.gpu.profile.subgroupSizes;
  if (decode && plan.matvec === 'rows' && sizes !== null && sizes.min >= 8) {
    // TOKENS 1 alone: the same per-token chain as TOKENS 8 (qmatvec_rows.wgsl), without the token loop.
    const t = TILES.qrows[op];
    const tokenTile = single ? 1 : MATVEC_MAX_TOKENS;
    variant = `matvec rows${tokenTile > 1 ? ` x${tokenTile}` : ''}`;
    src = source('qmatvec_rows.wgsl', ['subgroups.wgsl', '../quant.wgsl']);
    constants = { ...q, ...t, TOKENS: tokenTile };
    rowsPerGroup = t.WG * t.ROWS;
    tokensPerGroup = tokenTile;
    lanes = false;
  } else {
    // (matvec=rows without subgroups runs the workgroup strategy's kernel, 1 token included.)
    const reduce = plan.matvec === 'subgroup' ? 'subgroup' : 'workgroup';
    const t = single ? TILES.qlanes.decode[op] : plan.matvec === 'rows' ? TILES.qlanes.rowsBlock[op] : TILES.qlanes.block[op];
    variant = `lanes ${reduce}${t.TOKENS > 1 ? ` x${t.TOKENS}` : ''}`;
    src = source('qmatvec_lanes.wgsl', [`reduce_${reduce}.wgsl`, 'lanes.wgsl', '../quant.wgsl']);
    constants = { ...q, ...t, MATRICES: matrices };
    if (reduce === 'workgroup') {
      const need = matrices * t.ROWS * t.TOKENS * t.WG * 4;
      const have = enc.gpu.report.limits.maxComputeWorkgroupStorageSize;
      if (need > have) throw new Error(`matvec=workgroup needs ${need} bytes of workgroup memory; this device offers ${have} (use matvec=subgroup or rows)`);
    }
    rowsPerGroup = t.ROWS;
    tokensPerGroup = t.TOKENS;
  }
  const pipeline = getPipeline(enc.gpu, src, op, constants, `${op} ${variant} ${format}`);
  dispatchParts(enc, { pipeline, rowsPerGroup, tokensPerGroup, lanes }, a);
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
