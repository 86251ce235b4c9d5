/**
 * The kernel table: which WGSL kernel runs the matrix products, the fused block fronts and
 * attention, for each weight format, shape class and strategy of the kernel plan (plan.ts), and
 * the tile sizes each one compiles with. The wrappers (matmul/index.ts, matmul/fused.ts,
 * attention/index.ts) take their kernel from here and only dispatch it; `openchat info --kernels`
 * prints what the table gives a device's plan (describeKernels).
 *
 * A cell is a kernel, null (no kernel of its own: the wrapper runs separate dispatches), or a
 * choice by one key of the plan, `{ by: 'matvec', rows: ..., subgroup: ..., workgroup: ... }`.
 * What no key holds stays beside the kernel it concerns: `fallback` (what runs instead where a
 * condition of the device or the call holds: subgroups narrower than 8 lanes, a context too short
 * to split, heads too wide for flash) and `workgroupBytes` (checked against the device). One small
 * selection function per operation (productKernel, frontKernel, attentionKernel) looks a cell
 * up, follows its choices and checks those conditions: the only place a kernel is chosen. (A
 * condition per cell, as in `{ by: 'gemm', ... }`, would make every cell of the table a small
 * program; these few read better beside the kernels they concern.)
 *
 * Files are named from src/kernels/; a kernel's `slots` bind the `// #include <name>` lines of
 * its files (src/gpu/encoder.ts, wgsl()).
 */
import { GLOBAL_DIRECTIVE, shaderSource, wgsl, wgslFiles, type Overrides, type ShaderSource, type WgslSlots } from '../gpu/encoder.ts';
import type { DeviceProfile } from '../gpu/profile.ts';
import { GGML_BLOCK_DTYPES, isGgmlBlocks, isQuantized, type GgmlBlockDType, type MatrixDType } from '../gpu/buffers.ts';
import { kvCacheSlots, type KvCacheDtype } from './kv_cache.ts';
import type { KernelPlan } from './plan.ts';

/** The most tokens the decode (matvec) kernels take in one call; more run as prefill. */
export const MATVEC_MAX_TOKENS = 8;
/**
 * From this many rows a decode step is `wideDecode`: where the gemm adds a row as the matvec does
 * (matvec=rows with gemm=broadcast) it takes the gemm; below, matvec_rows' token loop is cheaper
 * (bench/RESULTS.md, "One pass").
 */
export const DECODE_GEMM_MIN_TOKENS = 5;

/**
 * Tile sizes of every matrix-product variant: the one source. Each WGSL file declares these
 * names as `override` constants without defaults, so a pipeline cannot be made without them.
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

/**
 * flash.wgsl's tile sizes (its override constants): BT query tokens x HB query heads per
 * workgroup, LANES invocations per query row, BK (<= 32, MAX_BK) keys per tile. Workgroup memory
 * BK * LANES * 8 * 16 + BT * HB * BK * LANES * 4 bytes = 12 KiB.
 */
export const FLASH_TILES = { BT: 16, HB: 4, LANES: 4, BK: 8 } as const;

/**
 * The sizes of the kernels' register arrays, per file that declares such arrays: the one source.
 * WGSL sizes a function's arrays by constants, not by overrides, so a kernel whose tile is an
 * override (ROWS, TOKENS, ...) sizes its arrays by a bound on it. kernelModule() declares these
 * at the top of each module that includes the file (`const MAX_ROWS = 6u;`) and refuses a
 * kernel whose tile passes them: each entry is [value, the overrides it bounds...].
 */
export const CAPACITY: Readonly<Record<string, Readonly<Record<string, readonly [number, ...string[]]>>>> = {
  'matmul/matvec_rows.wgsl': { MAX_ROWS: [6, 'ROWS'], MAX_TOKENS: [MATVEC_MAX_TOKENS, 'TOKENS'] },
  'matmul/qmatvec_rows.wgsl': { MAX_ROWS: [6, 'ROWS'] },
  'ggml/matvec_rows.wgsl': { MAX_ROWS: [6, 'ROWS'] },
  'matmul/fused_rows.wgsl': { MAX_ROWS: [6, 'ROWS'] },
  // The frame of matvec_lanes, qmatvec_lanes and ggml/matvec_lanes.
  'matmul/lanes.wgsl': { MAX_ROWS: [4, 'ROWS'], MAX_TOKENS: [MATVEC_MAX_TOKENS, 'TOKENS'] },
  'matmul/fused_lanes.wgsl': { MAX_ROWS: [4, 'ROWS'], MAX_TOKENS: [MATVEC_MAX_TOKENS, 'TOKENS'] },
  'matmul/gemm_regtile.wgsl': { MAX_ROWS: [4, 'ROWS_PER_GROUP'], MAX_TOKENS: [8, 'TOKENS'] },
  'matmul/gemm_broadcast.wgsl': { MAX_ROWS: [4, 'ROWS'], MAX_TOKENS: [32, 'TOKENS'] },
  'matmul/gemm_tiled.wgsl': { MAX_R: [8, 'RM', 'RN'] },
  'matmul/gemm_words.wgsl': { MAX_ROWS: [4, 'ROWS'], MAX_TOKENS_PER_INVOCATION: [4, 'TOKENS_PER_INVOCATION'] },
  // MAX_SLICE: vec4 chunks of a query row per lane (so FLASH_MAX_HEAD_DIM).
  'attention/flash.wgsl': { MAX_SLICE: [8], MAX_BK: [32, 'BK'] },
};

/** The widest head flash.wgsl holds: LANES lanes of MAX_SLICE vec4 chunks of a query row. */
export const FLASH_MAX_HEAD_DIM = 4 * FLASH_TILES.LANES * CAPACITY['attention/flash.wgsl']!.MAX_SLICE![0];

/**
 * tiled.wgsl's and split.wgsl's override constants (the split strategy falls back to tiled with
 * the same headBlocks): WG invocations per workgroup (split.wgsl: also keys per tile), HG query
 * heads of one KV head per workgroup (4: their scores travel as one vec4).
 */
export const ATTENTION_TILES = { WG: 64, HG: 4 } as const;

// ---------------------------------------------------------------------------------------------
// Keys

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

/**
 * The shape classes of a product (and of a fused front): a model step's (the model always passes
 * its step's BatchShape), then a kernel called alone, without `batch` (tests, benchmarks).
 */
export const PRODUCT_SHAPES = {
  decodeOne: 'decode step: 1 row',
  decode: `decode step: 2-${DECODE_GEMM_MIN_TOKENS - 1} rows`,
  wideDecode: `decode step: ${DECODE_GEMM_MIN_TOKENS}+ rows`,
  prefill: 'prefill step',
  token: 'alone: 1 token',
  block: `alone: 2-${MATVEC_MAX_TOKENS} tokens`,
  chunk: `alone: ${MATVEC_MAX_TOKENS + 1}-${TILES.tiled.FEW_TOKENS} tokens`,
  longChunk: `alone: ${TILES.tiled.FEW_TOKENS + 1}+ tokens`,
} as const;
export type ProductShape = keyof typeof PRODUCT_SHAPES;

/** The shape class of a product of `tokens` tokens in a step of kind `batch` (none: called alone). */
export function productShape(tokens: number, batch?: BatchShape): ProductShape {
  if (batch === 'prefill') return 'prefill';
  if (batch === 'decode') return tokens === 1 ? 'decodeOne' : tokens < DECODE_GEMM_MIN_TOKENS ? 'decode' : 'wideDecode';
  if (tokens === 1) return 'token';
  return tokens <= MATVEC_MAX_TOKENS ? 'block' : tokens <= TILES.tiled.FEW_TOKENS ? 'chunk' : 'longChunk';
}

/**
 * The weights a product reads: `dense` f32/f16/bf16 (widened as read, weights.wgsl), `quant`
 * q8/q4 (quant.wgsl), `narrow`: dense with cols not a multiple of 8 (tests only), which only
 * gemm_words.wgsl reads, or one of llama.cpp's block formats by its dtype (q4_k, ...: GGUF
 * files; ggml/ggml.wgsl and the format's decode file, bound to the kernels' <ggml_format>).
 */
export type ProductWeights = 'dense' | 'quant' | 'narrow' | GgmlBlockDType;
export const PRODUCT_WEIGHTS: Record<ProductWeights, string> = {
  dense: 'f32/f16/bf16 weights', quant: 'q8/q4 weights', narrow: 'cols not a multiple of 8 (tests)',
  ...(Object.fromEntries(GGML_BLOCK_DTYPES.map((d) => [d, `${d} weights (GGUF blocks)`])) as Record<GgmlBlockDType, string>),
};

export function productWeights(w: { dtype: MatrixDType; cols: number }): ProductWeights {
  if (isGgmlBlocks(w.dtype)) return w.dtype;
  return isQuantized(w.dtype) ? 'quant' : w.cols % 8 === 0 ? 'dense' : 'narrow';
}

/** The shape classes of attention: decodeAttentionRows, then attention() with and without a prefill strategy. */
export const ATTENTION_SHAPES = {
  decodeRows: 'decode step rows (decodeAttentionRows)',
  prefill: 'prefill chunk (attention() with a prefill strategy)',
  decode: '1 decode token (attention() without one)',
  chunk: '2+ tokens without one (tests)',
} as const;
export type AttentionShape = keyof typeof ATTENTION_SHAPES;

// ---------------------------------------------------------------------------------------------
// Kernels and cells

/** The conditions under which a kernel's fallback runs instead: what the table's keys do not say. */
export const CONDITIONS = {
  narrowSubgroups: 'the adapter has no subgroups of 8 or more lanes',
  shortContext: 'the context is too short to split (splitsDecode)',
  wideHeads: `headDim > ${FLASH_MAX_HEAD_DIM}`,
} as const;
export type Condition = keyof typeof CONDITIONS;

/** One kernel a cell names. */
export interface Kernel {
  /** The WGSL file, from src/kernels/. */
  readonly file: string;
  /** Its entry points, in the order one call dispatches them. */
  readonly entries: readonly string[];
  /** What its files' `// #include <name>` lines stand for (files from src/kernels/). */
  readonly slots: WgslSlots;
  /** Its override constants: tile sizes. A product adds its weights' DTYPE or QFORMAT per call. */
  readonly constants: Readonly<Overrides>;
  /** Its name in pipeline labels (the profiler's rows). */
  readonly variant: string;
  /** Where `when` holds, `kernel` runs instead (null: the separate dispatches). */
  readonly fallback?: { readonly when: Condition; readonly kernel: Kernel | null };
  /** Bytes of workgroup memory its tiles need, where they may pass a device's limit (checked against it). */
  readonly workgroupBytes?: number;
}

/** A product kernel: how its workgroups cover a part's rows and the tokens. */
export interface ProductKernel extends Kernel {
  /**
   * `rows`: row groups along x, token blocks along y. `lanes` (matvec_lanes, qmatvec_lanes): row
   * groups on a 2-D grid of width groups_x, token blocks along z. `tiles` (gemm_tiled): row tiles x
   * token tiles x K ranges, with `splitReduce` adding the ranges when K is split.
   */
  readonly grid: 'rows' | 'lanes' | 'tiles';
  readonly rowsPerGroup: number;
  readonly tokensPerGroup: number;
  readonly splitReduce?: Kernel;
  readonly fallback?: { readonly when: Condition; readonly kernel: ProductKernel | null };
}

/** A fused front kernel (fused_rows.wgsl, fused_lanes.wgsl): workgroups on a 2-D grid, token blocks along z. */
export interface FrontKernel extends Kernel {
  readonly rowsPerGroup: number;
  readonly tokensPerGroup: number;
}

/** The plan keys a cell may choose by. */
type ChoiceKey = 'matvec' | 'gemm' | 'attention' | 'prefillAttention';
type Choice<K, P extends ChoiceKey> = { readonly by: P } & { readonly [V in KernelPlan[P]]: Cell<K> };
/** A kernel, null (none of its own), or a choice by one key of the plan. */
export type Cell<K> = K | null | Choice<K, 'matvec'> | Choice<K, 'gemm'> | Choice<K, 'attention'> | Choice<K, 'prefillAttention'>;

/** Follows a cell's choices by `plan` to its kernel (or null). */
function pick<K extends Kernel>(cell: Cell<K>, plan: Partial<Pick<KernelPlan, ChoiceKey>>): K | null {
  let c = cell;
  while (c !== null && 'by' in c) {
    const value = plan[c.by];
    if (value === undefined) throw new Error(`kernel table: a cell chooses by plan.${c.by}, which the call does not give`);
    c = (c as unknown as Record<string, Cell<K>>)[value]!;
  }
  return c;
}

/** Follows `k`'s fallbacks while their conditions hold. */
function settle<K extends Kernel>(k: K | null, holds: (c: Condition) => boolean): K | null {
  while (k?.fallback && holds(k.fallback.when)) k = k.fallback.kernel as K | null;
  return k;
}

const x = (tokens: number) => (tokens > 1 ? ` x${tokens}` : '');

// ---------------------------------------------------------------------------------------------
// Matrix products: matmul (y = x W^T) and swiglu (y = silu(x gate^T) * (x up^T)), matmul/index.ts

type ProductOp = 'matmul' | 'swiglu';
type Reduction = 'subgroup' | 'workgroup';
const READER = { dense: 'matmul/gemm_read_dense.wgsl', quant: 'matmul/gemm_read_quant.wgsl', ggml: 'ggml/gemm_read_ggml.wgsl' } as const;
/** The gemm kernels' <weight_reader> (and, for a block format, the reader's <ggml_format>). */
type Reader = 'dense' | 'quant' | GgmlBlockDType;
function readerSlots(w: Reader): WgslSlots {
  return w === 'dense' || w === 'quant' ? { weight_reader: READER[w] } : { weight_reader: READER.ggml, ggml_format: `ggml/${w}.wgsl` };
}

function productTable(op: ProductOp): Record<ProductWeights, Record<ProductShape, Cell<ProductKernel>>> {
  // One entry point per kernel file: MATRICES picks the product (products.wgsl).
  const matrices = op === 'swiglu' ? 2 : 1;
  const entries = ['main'];
  const rows = (tokens: number): ProductKernel => {
    const t = TILES.rows[op];
    return { file: 'matmul/matvec_rows.wgsl', entries, slots: {}, constants: { ...t, TOKENS: tokens, MATRICES: matrices }, variant: `matvec rows${x(tokens)}`, grid: 'rows', rowsPerGroup: t.WG * t.ROWS, tokensPerGroup: tokens };
  };
  const lanes = (reduce: Reduction, tokens: number): ProductKernel => {
    const t = TILES.lanes[op];
    return {
      file: 'matmul/matvec_lanes.wgsl', entries, slots: { reduce: `matmul/reduce_${reduce}.wgsl` }, constants: { ...t, TOKENS: tokens, MATRICES: matrices },
      variant: `matvec ${reduce}${x(tokens)}`, grid: 'lanes', rowsPerGroup: t.ROWS, tokensPerGroup: tokens,
      workgroupBytes: reduce === 'workgroup' ? matrices * t.ROWS * tokens * t.WG * 4 : undefined,
    };
  };
  const regtile = (w: Reader): ProductKernel => {
    const t = TILES.regtile[op];
    return { file: 'matmul/gemm_regtile.wgsl', entries, slots: readerSlots(w), constants: { ...t, MATRICES: matrices }, variant: `regtile x${t.TOKENS}`, grid: 'rows', rowsPerGroup: (t.WG / t.LANES) * t.ROWS_PER_GROUP, tokensPerGroup: t.TOKENS };
  };
  const broadcast = (w: Reader): ProductKernel => {
    const t = TILES.broadcast[op];
    return { file: 'matmul/gemm_broadcast.wgsl', entries, slots: readerSlots(w), constants: { ...t, MATRICES: matrices }, variant: `broadcast x${t.TOKENS}`, grid: 'rows', rowsPerGroup: t.WG * t.ROWS, tokensPerGroup: t.TOKENS };
  };
  const splitReduce: Kernel = { file: 'matmul/gemm_split_reduce.wgsl', entries, slots: {}, constants: { ...TILES.splitReduce, MATRICES: matrices }, variant: 'split reduce' };
  const tiled = (w: Reader, size: 'few' | 'many'): ProductKernel => {
    const t = TILES.tiled[op][size];
    return { file: 'matmul/gemm_tiled.wgsl', entries, slots: readerSlots(w), constants: { ...t, MATRICES: matrices }, variant: `tiled ${t.TM}x${t.TN}`, grid: 'tiles', rowsPerGroup: t.TN, tokensPerGroup: t.TM, splitReduce };
  };
  // A block format's decode kernels are ggml/'s twins of qmatvec_lanes and qmatvec_rows, with its tiles.
  const qlanes = (reduce: Reduction, tile: keyof typeof TILES.qlanes, ggml?: GgmlBlockDType): ProductKernel => {
    const t = TILES.qlanes[tile][op];
    return {
      file: ggml ? 'ggml/matvec_lanes.wgsl' : 'matmul/qmatvec_lanes.wgsl', entries,
      slots: { reduce: `matmul/reduce_${reduce}.wgsl`, ...(ggml ? { ggml_format: `ggml/${ggml}.wgsl` } : {}) }, constants: { ...t, MATRICES: matrices },
      variant: `lanes ${reduce}${x(t.TOKENS)}`, grid: 'lanes', rowsPerGroup: t.ROWS, tokensPerGroup: t.TOKENS,
      workgroupBytes: reduce === 'workgroup' ? matrices * t.ROWS * t.TOKENS * t.WG * 4 : undefined,
    };
  };
  // qmatvec_rows shares x among 8 lanes by subgroupBroadcast; without such subgroups, matvec=rows
  // runs the workgroup strategy's kernel (with a small workgroup for blocks of tokens).
  const qrows = (tokens: number, ggml?: GgmlBlockDType): ProductKernel => {
    const t = TILES.qrows[op];
    return {
      file: ggml ? 'ggml/matvec_rows.wgsl' : 'matmul/qmatvec_rows.wgsl', entries, slots: ggml ? { ggml_format: `ggml/${ggml}.wgsl` } : {},
      constants: { ...t, TOKENS: tokens, MATRICES: matrices }, variant: `matvec rows${x(tokens)}`, grid: 'rows', rowsPerGroup: t.WG * t.ROWS, tokensPerGroup: tokens,
      fallback: { when: 'narrowSubgroups', kernel: qlanes('workgroup', tokens === 1 ? 'decode' : 'rowsBlock', ggml) },
    };
  };

  const [rows1, rows8] = [rows(1), rows(MATVEC_MAX_TOKENS)];
  const lanes1 = { subgroup: lanes('subgroup', 1), workgroup: lanes('workgroup', 1) };
  const lanes8 = { subgroup: lanes('subgroup', MATVEC_MAX_TOKENS), workgroup: lanes('workgroup', MATVEC_MAX_TOKENS) };
  const gemm = (w: Reader) => {
    const [rt, bc, few, many] = [regtile(w), broadcast(w), tiled(w, 'few'), tiled(w, 'many')];
    return {
      few: { by: 'gemm', regtile: rt, broadcast: bc, tiled: few },
      // A batched prefill step keeps the `many` tile whatever its count (BatchShape).
      many: { by: 'gemm', regtile: rt, broadcast: bc, tiled: many },
      regtile: rt,
      broadcast: bc,
    } as const;
  };
  const dense = gemm('dense');
  // q8/q4 and each block format: the same cells, their own kernels.
  const blocks = (ggml?: GgmlBlockDType): Record<ProductShape, Cell<ProductKernel>> => {
    const g = gemm(ggml ?? 'quant');
    const block = { by: 'matvec', rows: qrows(MATVEC_MAX_TOKENS, ggml), subgroup: qlanes('subgroup', 'block', ggml), workgroup: qlanes('workgroup', 'block', ggml) } as const;
    return {
      decodeOne: block,
      decode: block,
      wideDecode: block,
      prefill: g.many,
      token: { by: 'matvec', rows: qrows(1, ggml), subgroup: qlanes('subgroup', 'decode', ggml), workgroup: qlanes('workgroup', 'decode', ggml) },
      block,
      chunk: g.few,
      longChunk: g.many,
    };
  };
  const words: ProductKernel = {
    file: 'matmul/gemm_words.wgsl', entries: ['matmul'], slots: {}, constants: TILES.words, variant: 'words', grid: 'rows',
    rowsPerGroup: TILES.words.ROWS, tokensPerGroup: TILES.words.WG * TILES.words.TOKENS_PER_INVOCATION,
  };
  // gemm_words binds x and w by smaller words and has no SwiGLU entry (swiglu needs cols % 8 == 0).
  const narrow = op === 'matmul' ? words : null;
  return {
    dense: {
      decodeOne: { by: 'matvec', rows: rows1, ...lanes8 },
      decode: { by: 'matvec', rows: rows8, ...lanes8 },
      // gemm_broadcast sums each row in the very chain matvec_rows does over f32/f16/bf16 weights
      // (fma8 for matmul, two dots per chunk for SwiGLU; matmul/batch.test.ts), so a decode step
      // of DECODE_GEMM_MIN_TOKENS rows or more may take it (x tiles shared by 16 tokens) and every
      // row still gets its one-token bits. Elsewhere (the lanes' cross-lane reductions against
      // gemm_tiled's tiles, q8/q4's group sums) a wide decode step runs the decode kernel over
      // blocks of MATVEC_MAX_TOKENS tokens.
      wideDecode: { by: 'matvec', rows: { by: 'gemm', regtile: rows8, broadcast: dense.broadcast, tiled: rows8 }, ...lanes8 },
      prefill: dense.many,
      token: { by: 'matvec', rows: rows1, ...lanes1 },
      block: { by: 'matvec', rows: dense.regtile, ...lanes8 },
      chunk: dense.few,
      longChunk: dense.many,
    },
    quant: blocks(),
    narrow: { decodeOne: narrow, decode: narrow, wideDecode: narrow, prefill: narrow, token: narrow, block: narrow, chunk: narrow, longChunk: narrow },
    ...(Object.fromEntries(GGML_BLOCK_DTYPES.map((d) => [d, blocks(d)])) as Record<GgmlBlockDType, Record<ProductShape, Cell<ProductKernel>>>),
  };
}

const PRODUCTS = { matmul: productTable('matmul'), swiglu: productTable('swiglu') };

/** What the matrix products read of the plan; without `gemm`, prefill runs gemm_regtile.wgsl. */
export type MatmulPlan = Pick<KernelPlan, 'matvec'> & Partial<Pick<KernelPlan, 'gemm'>>;

/** The device's own conditions (the others are the call's). */
function deviceHolds(device: DeviceProfile, c: Condition): boolean {
  return c === 'narrowSubgroups' && !(device.subgroupSizes !== null && device.subgroupSizes.min >= 8);
}

/** The kernel of a product (matmul or swiglu) of weights `w` in shape class `shape` under `plan`, on `device`. */
export function productKernel(op: ProductOp, w: { dtype: MatrixDType; cols: number }, shape: ProductShape, plan: MatmulPlan, device: DeviceProfile): ProductKernel {
  const cell = PRODUCTS[op][productWeights(w)][shape];
  const k = settle(pick(cell, { matvec: plan.matvec, gemm: plan.gemm ?? 'regtile' }), (c) => deviceHolds(device, c));
  if (!k) throw new Error(`matmul: no ${op} kernel reads ${w.dtype} weights of ${w.cols} columns`);
  const have = device.limits.maxComputeWorkgroupStorageSize;
  if (k.workgroupBytes !== undefined && k.workgroupBytes > have) {
    throw new Error(`matvec=workgroup needs ${k.workgroupBytes} bytes of workgroup memory; this device offers ${have} (use matvec=subgroup or rows)`);
  }
  return k;
}

// ---------------------------------------------------------------------------------------------
// Fused fronts of a block (matmul/fused.ts): q/k/v in one dispatch, the MLP's gate/up pair with
// its rms_norm folded in. Only f32/f16/bf16 weights in one part each (the wrapper checks): q8/q4,
// the block formats and narrow widths run the separate dispatches.

type FrontOp = 'qkv' | 'swiglu';

function frontShapes(op: FrontOp, norm: boolean): Record<ProductShape, Cell<FrontKernel>> {
  const tile = op === 'swiglu' ? 'swiglu' : 'matmul';
  const matrices = op === 'swiglu' ? 2 : 1;
  const t = TILES.rows[tile];
  // One entry point for both fronts: MATRICES picks qkv (1) or swiglu (2) (fused_products.wgsl).
  const rows: FrontKernel = { file: 'matmul/fused_rows.wgsl', entries: ['main'], slots: {}, constants: { ...t, MATRICES: matrices, NORM: norm ? 1 : 0 }, variant: 'rows', rowsPerGroup: t.WG * t.ROWS, tokensPerGroup: 1 };
  const lanes = (reduce: Reduction, tokens: number): FrontKernel => {
    const l = TILES.lanes[tile];
    return {
      file: 'matmul/fused_lanes.wgsl', entries: ['main'], slots: { reduce: `matmul/reduce_${reduce}.wgsl` },
      constants: { ...l, TOKENS: tokens, MATRICES: matrices, NORM: norm ? 1 : 0 }, variant: `${reduce}${x(tokens)}`, rowsPerGroup: l.ROWS, tokensPerGroup: tokens,
      workgroupBytes: reduce === 'workgroup' ? (matrices * l.ROWS + (norm ? 1 : 0)) * tokens * l.WG * 4 : undefined,
    };
  };
  const lanes1 = { subgroup: lanes('subgroup', 1), workgroup: lanes('workgroup', 1) };
  const lanes8 = { subgroup: lanes('subgroup', MATVEC_MAX_TOKENS), workgroup: lanes('workgroup', MATVEC_MAX_TOKENS) };
  // fused_rows takes one token; its fma chains are matvec_rows.wgsl's, so a decode step's 2..8 rows
  // (three matvec_rows dispatches) add alike. A batched step under rows keeps the norm apart.
  return {
    decodeOne: { by: 'matvec', rows: norm ? null : rows, ...lanes8 },
    decode: { by: 'matvec', rows: null, ...lanes8 },
    wideDecode: { by: 'matvec', rows: null, ...lanes8 },
    prefill: null,
    token: { by: 'matvec', rows, ...lanes1 },
    block: { by: 'matvec', rows: null, ...lanes8 },
    chunk: null,
    longChunk: null,
  };
}

/** qkv with and without the norm folded in; swiglu always folds it (fuse=norm+qkv only). */
const FRONTS = {
  qkv: { plain: frontShapes('qkv', false), norm: frontShapes('qkv', true) },
  swiglu: { norm: frontShapes('swiglu', true) },
};

/** What the fronts read of the plan. */
export type FusePlan = Pick<KernelPlan, 'matvec' | 'fuse'>;

/**
 * The fused kernel of a block's front (`qkv`: normQKV, `swiglu`: normSwiGLU) and whether it folds
 * the rms_norm in, or null where the separate dispatches run (rmsnorm, then the products).
 * plan.fuse: `none` fuses nothing, `qkv` q/k/v with the norm apart, `norm+qkv` both fronts with
 * the norm folded, except where `h` is read afterwards (`writeH`: a LoRA adapter) or a batched
 * step runs under matvec=rows (there the norm is its own dispatch).
 */
export function frontKernel(op: FrontOp, plan: FusePlan, shape: ProductShape, device: DeviceProfile, writeH = false): { kernel: FrontKernel; norm: boolean } | null {
  if (plan.fuse === 'none' || (op === 'swiglu' && plan.fuse !== 'norm+qkv')) return null;
  const batched = shape === 'decodeOne' || shape === 'decode' || shape === 'wideDecode' || shape === 'prefill';
  const norm = op === 'swiglu' || (plan.fuse === 'norm+qkv' && !writeH && !(batched && plan.matvec === 'rows'));
  const byNorm: { plain?: Record<ProductShape, Cell<FrontKernel>>; norm: Record<ProductShape, Cell<FrontKernel>> } = FRONTS[op];
  const kernel = pick(byNorm[norm ? 'norm' : 'plain']![shape], plan);
  if (!kernel || (kernel.workgroupBytes ?? 0) > device.limits.maxComputeWorkgroupStorageSize) return null;
  return { kernel, norm };
}

// ---------------------------------------------------------------------------------------------
// Attention (attention/index.ts), per KV-cache format

function attentionTable(kvCache: KvCacheDtype): Record<AttentionShape, Cell<Kernel>> {
  const slots = kvCacheSlots(kvCache);
  const tiled: Kernel = { file: 'attention/tiled.wgsl', entries: ['main'], slots, constants: ATTENTION_TILES, variant: 'tiled' };
  // Contexts too short to be worth splitting run the tiled kernel (decided from the token's own position).
  const split: Kernel = { file: 'attention/split.wgsl', entries: ['main', 'reduce'], slots, constants: ATTENTION_TILES, variant: 'split', fallback: { when: 'shortContext', kernel: tiled } };
  // flash.wgsl holds at most FLASH_MAX_HEAD_DIM values of a query row; wider heads run the tiled kernel.
  const flash: Kernel = { file: 'attention/flash.wgsl', entries: ['main'], slots, constants: FLASH_TILES, variant: 'flash', fallback: { when: 'wideHeads', kernel: tiled } };
  return {
    decodeRows: { ...tiled, entries: ['decode_rows'], variant: 'tiled_rows' },
    prefill: { by: 'prefillAttention', tiled, flash },
    decode: { by: 'attention', tiled, split },
    chunk: tiled,
  };
}

const ATTENTION = { f32: attentionTable('f32'), f16: attentionTable('f16') };

/** What attention reads of the plan (a decode token's strategy, a prefill chunk's, the cache's format). */
export type AttentionPlan = Partial<Pick<KernelPlan, 'attention' | 'prefillAttention'>> & Pick<KernelPlan, 'kvCache'>;

/** The attention kernel of a call in shape class `shape`; `holds` answers the call's conditions (shortContext, wideHeads). */
export function attentionKernel(shape: AttentionShape, plan: AttentionPlan, holds: (c: Condition) => boolean): Kernel {
  const k = settle(pick(ATTENTION[plan.kvCache][shape], plan), holds);
  if (!k) throw new Error(`attention: no kernel for ${shape}`);
  return k;
}

// ---------------------------------------------------------------------------------------------
// Sources and the listing

const sources = new WeakMap<Kernel, ShaderSource>();

/** A kernel's WGSL module (its file, its includes resolved, its files' CAPACITY declared), made once per kernel. */
export function kernelModule(k: Kernel): ShaderSource {
  let s = sources.get(k);
  if (!s) {
    s = shaderSource(declareCapacity(k, wgsl(k.file, import.meta.url, k.slots)));
    sources.set(k, s);
  }
  return s;
}

/** `code` with the CAPACITY constants of the kernel's files declared after its global directives; throws where a tile passes one. */
function declareCapacity(k: Kernel, code: string): string {
  const decls: string[] = [];
  for (const file of kernelFiles(k)) {
    for (const [name, [value, ...bounded]] of Object.entries(CAPACITY[file] ?? {})) {
      for (const o of bounded) {
        const v = k.constants[o];
        if (v !== undefined && v > value) throw new Error(`kernel table: ${k.file} (${k.variant}) has ${o}=${v}, past ${file}'s ${name} = ${value} (CAPACITY)`);
      }
      decls.push(`const ${name} = ${value}u;  // CAPACITY['${file}'], src/kernels/table.ts`);
    }
  }
  if (!decls.length) return code;
  const lines = code.split('\n');
  let i = 0;
  while (i < lines.length && GLOBAL_DIRECTIVE.test(lines[i]!)) i++;
  return [...lines.slice(0, i), ...decls, ...lines.slice(i)].join('\n');
}

const HERE = new URL('./', import.meta.url).href;

/** The files of a kernel's module from src/kernels/, in module order (the kernel's own file last). */
export function kernelFiles(k: Kernel): string[] {
  return wgslFiles(k.file, import.meta.url, k.slots).map((href) => (href.startsWith(HERE) ? href.slice(HERE.length) : href));
}

function describe(k: Kernel): string {
  const constants = Object.entries(k.constants).map(([name, v]) => `${name}=${v}`).join(' ');
  return `${k.file} @${k.entries.join(' @')}  ${constants}`;
}

/** Lines for one kernel: the file, its entry points and constants, then the files it includes. */
function kernelLines(k: Kernel | null, none: string, device: DeviceProfile): string[] {
  // The device's conditions are known here; the call's are printed as the fallback they choose.
  const settled = settle(k, (c) => deviceHolds(device, c));
  if (!settled) return [none];
  const includes = (k: Kernel) => `  includes ${kernelFiles(k).slice(0, -1).join(', ') || 'nothing'}`;
  const lines = [describe(settled), includes(settled)];
  const fallback = settled.fallback;
  if (fallback) lines.push(`where ${CONDITIONS[fallback.when]}: ${fallback.kernel ? describe(fallback.kernel) : none}`);
  const reduce = (settled as ProductKernel).splitReduce;
  if (reduce) lines.push(`where K is split (GPUs), then ${describe(reduce)}`, includes(reduce));
  return lines;
}

/** Shape names merged: 'decode step: 1 row', 'decode step: 2-8 rows' -> 'decode step: 1 row, 2-8 rows'. */
function shapeLabel(names: string[]): string {
  const groups: [string, string[]][] = [];
  for (const n of names) {
    const [head, tail] = n.includes(': ') ? (n.split(': ') as [string, string]) : [n, ''];
    const last = groups[groups.length - 1];
    if (last && last[0] === head) last[1].push(tail);
    else groups.push([head, tail ? [tail] : []]);
  }
  return groups.map(([head, tails]) => (tails.length ? `${head}: ${tails.join(', ')}` : head)).join('; ');
}

/** One section of the listing: an operation, its shape classes with the lines of the kernel each runs (equal neighbours merged). */
function section(title: string, shapes: Record<string, string>, lines: (shape: string) => string[]): string[] {
  const out = ['', title];
  const names = Object.keys(shapes);
  for (let i = 0; i < names.length; ) {
    const body = lines(names[i]!);
    let j = i + 1;
    while (j < names.length && lines(names[j]!).join('\n') === body.join('\n')) j++;
    out.push(`  ${shapeLabel(names.slice(i, j).map((n) => shapes[n]!))}`, ...body.map((l) => `      ${l}`));
    i = j;
  }
  return out;
}

/**
 * What the table gives `plan` on `device`, for `openchat info --kernels`: for each operation and
 * shape class, the WGSL file, entry points and override constants it runs and the files of its
 * module in include order (its own last), with the fallbacks the call decides.
 */
export function describeKernels(plan: KernelPlan, device: DeviceProfile): string[] {
  const out = [
    'kernels of this plan (src/kernels/table.ts; files from src/kernels/, includes in module order):',
    "the model runs the 'decode step' and 'prefill step' shapes; 'alone' is a kernel called outside a step (tests, benchmarks)",
  ];
  const products = (op: ProductOp, title: string, weights: ProductWeights[]) => {
    for (const w of weights) {
      out.push(
        ...section(`${title}, ${PRODUCT_WEIGHTS[w]}`, PRODUCT_SHAPES, (shape) =>
          kernelLines(pick(PRODUCTS[op][w][shape as ProductShape], plan), 'no kernel', device),
        ),
      );
    }
  };
  // The block formats share their kernels, each with its own <ggml_format>: q4_k stands for them.
  products('matmul', 'matmul (q/k/v/o/down_proj, lm_head)', ['dense', 'quant', 'narrow', 'q4_k']);
  products('swiglu', 'swiglu (gate/up_proj)', ['dense', 'quant', 'q4_k']);
  out.push('', `(${GGML_BLOCK_DTYPES.filter((d) => d !== 'q4_k').join(', ')} weights: as q4_k, with their own ggml/<format>.wgsl)`);
  const fronts = (op: FrontOp, title: string, apart: string) => {
    out.push(
      ...section(`${title}, fuse=${plan.fuse}, f32/f16/bf16 weights in one part each (else as q8/q4)`, PRODUCT_SHAPES, (shape) => {
        const f = frontKernel(op, plan, shape as ProductShape, device);
        return f ? kernelLines(f.kernel, '', device).map((l, i) => (i === 0 && !f.norm ? `rmsnorm.wgsl, then ${l}` : l)) : [apart];
      }),
    );
  };
  fronts('qkv', 'normQKV (rms_norm, q/k/v_proj)', 'rmsnorm.wgsl, then matmul x3 as above');
  fronts('swiglu', 'normSwiGLU (rms_norm, gate/up_proj)', 'rmsnorm.wgsl, then swiglu as above');
  out.push(
    ...section(`attention, attention=${plan.attention}, prefillAttention=${plan.prefillAttention}, kvCache=${plan.kvCache}`, ATTENTION_SHAPES, (shape) =>
      kernelLines(pick(ATTENTION[plan.kvCache][shape as AttentionShape], plan), 'no kernel', device),
    ),
  );
  return out;
}
