/**
 * The Mistral forward pass on WebGPU: a Hugging Face checkpoint streamed onto the device
 * (load.ts), a pool of KV-cache regions, and the one pass, `step()`: a batch of sequences, each
 * with its chunk of tokens, through one decoder layer per screen below (`layer()`). Everything
 * runs through it (the scheduler, and forward(), a step of one sequence). Every operation is a
 * WGSL kernel from src/kernels; a whole step is recorded into one command buffer and submitted
 * once (or every plan.submitLayers layers). Which variant of each kernel runs is the kernel plan
 * (src/kernels/plan.ts) through the kernel table (src/kernels/table.ts), resolved once at load;
 * layer() reads the same whatever the plan.
 */
import { join } from 'node:path';
import type { Gpu } from '../gpu/device.ts';
import { createStorageBuffer, destroyMatrix, readF32, readU32, writeBuffer, type GpuMatrix, type QuantFormat } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { contextLengthFor, loadConfig, type ModelConfig } from './config.ts';
import { KVCache } from './kv_cache.ts';
import { isGgufPath } from './gguf_model.ts';
import { loadWeights, type DeviceWeights, type Layer, type LoadProgress } from './load.ts';
import type { ModelSource } from '../util/files.ts';
import { embedding } from '../kernels/embedding.ts';
import { rmsNorm } from '../kernels/rmsnorm.ts';
import { matmul, type BatchShape } from '../kernels/matmul/index.ts';
import { normQKV, normSwiGLU } from '../kernels/matmul/fused.ts';
import { resolvePlan, type KernelPlan } from '../kernels/plan.ts';
import { rope, ropeTable } from '../kernels/rope.ts';
import { attention, createAttentionPartials, decodeAttentionRows, destroyAttentionPartials, splitsDecode, type AttentionPartials, type AttentionStrategy } from '../kernels/attention/index.ts';
import { kvWriteRows } from '../kernels/kv_write.ts';
import { BATCH_ROW_BYTES, writeBatchRows, type BatchRow } from '../kernels/batch_rows.ts';
import type { KvCacheDtype } from '../kernels/kv_cache.ts';
import { argmax } from '../kernels/argmax.ts';
import { topK } from '../kernels/topk.ts';
import { logSumExp } from '../kernels/logsumexp.ts';
import { loraUpdate, siluMul } from '../kernels/lora/index.ts';
import { DeviceLora, type LinearKey, type LoraWeights } from './lora.ts';

export type { LoadProgress } from './load.ts';

export interface ModelOptions {
  /** Longest sequence (prompt + output) to allocate for; at most max_position_embeddings. */
  contextLength?: number;
  /** Most tokens per prefill dispatch; bounds the activation buffers (default: the plan's prefillChunk). */
  maxChunk?: number;
  /**
   * Kernel variants to force over the device's plan and OPENCHAT_KERNELS (src/kernels/plan.ts):
   * the matvec strategy, the attention strategy ('tiled' or 'split'), the KV cache storage
   * ('f32', or 'f16': half the memory and traffic, drifts past the f32 golden tolerance), ...
   */
  plan?: Partial<KernelPlan>;
  onProgress?: (p: LoadProgress) => void;
  /**
   * Quantize the seven projections of every layer to q8 or q4 as they stream in, and embed_tokens
   * and lm_head to vocabFormats() (src/kernels/quant.ref.ts).
   */
  quantize?: QuantFormat;
  /** Split attention: keys per segment instead of the choice for a large GPU (tests, benchmarks). */
  attentionSegmentKeys?: number;
  /** Where the folder's files are read from (default: the disk; a browser page passes its own, src/web/sources.ts). */
  files?: ModelSource;
  /** Host memory the loader streams weights through (default STAGING_BYTES; a tab, whose heap is small, passes less). */
  stagingBytes?: number;
  /** Sequences the KV-cache pool holds at once (continuous batching, `step`); default 1. */
  sequences?: number;
  /** Over the checkpoint's sliding_window (GGUF files have none): keys a query sees; 0 or null for full attention. */
  slidingWindow?: number | null;
}

/** What one sequence of a step reads back (of its last row, but 'all-logits'). */
export type StepReadout = Readout;

/** One sequence's share of a step: `ids` run at its region's next positions. */
export interface StepSequence {
  /** Its region of the KV-cache pool, 0 .. sequences - 1. */
  seq: number;
  ids: readonly number[];
  readout: StepReadout;
}

/**
 * The shape of one step, passed down to every layer: its rows carry their own positions and
 * regions in the batch descriptor `batchRows`; `chunks` are the sequences that attend by
 * `attention()` (every chunk of a prefill step; a decode step's rows whose keys split), the
 * `decodeRows` rows before them attend in one decodeAttentionRows dispatch.
 */
interface StepShape {
  tokens: number;
  batchRows: GPUBuffer;
  /** The step's last position (rope's bound on its table). */
  lastPos: number;
  /** The step's kind: its products' kernel shape, the same whatever its size. */
  batch: BatchShape;
  /** The LoRA adapter every row of the step runs under, if any. */
  adapter?: DeviceLora;
  decodeRows: number;
  chunks: { seq: number; row0: number; tokens: number; pos0: number }[];
}

/** How attention runs, fixed at load: what `layer()` passes to every attention call. */
interface AttentionPlan {
  strategy: AttentionStrategy;
  kvCache: KvCacheDtype;
  partials?: AttentionPartials; // the split strategy's scratch, shared by all layers
  segmentKeys?: number;
}

/** What to read back after running a sequence of tokens. */
export type Readout =
  | { kind: 'none' }
  | { kind: 'argmax' } // the last position's most likely token: 4 bytes back
  | { kind: 'topk'; k: number; logSumExp?: boolean } // the last position's k best tokens and their logits (and the row's log-sum-exp, for log-probabilities)
  | { kind: 'logits' } // the last position's full logits row
  | { kind: 'all-logits' } // every position's logits [tokens, vocab_size]
  | { kind: 'hidden-states' }; // for tests: the last position's hidden state after each step (ForwardResult.hiddenStates)

export interface ForwardResult {
  argmax?: number;
  topk?: { ids: Uint32Array; logits: Float32Array; logSumExp?: number };
  logits?: Float32Array;
  /**
   * The last position's hidden state [num_hidden_layers + 2, hidden_size]: the
   * embedding, each decoder layer's output (the residual stream), and the final
   * norm's output (what lm_head sees). The layout of golden/'s hidden-state file.
   */
  hiddenStates?: Float32Array;
}

/** One layer's LoRA updates under an adapter: the adapted projections only. */
type LayerLora = DeviceLora['layers'][number];

/** Activations for up to `chunk` tokens, row-major [tokens, features], f32. */
interface Scratch {
  chunk: number;
  ids: GPUBuffer; // u32 [chunk]
  x: GPUBuffer; // residual stream [chunk, hidden_size]
  h: GPUBuffer; // normed input of a block [chunk, hidden_size]
  q: GPUBuffer; // [chunk, num_attention_heads * head_dim]
  k: GPUBuffer; // [chunk, num_key_value_heads * head_dim]
  v: GPUBuffer;
  attn: GPUBuffer; // attention output [chunk, num_attention_heads * head_dim]
  mlp: GPUBuffer; // silu(gate) * up [chunk, intermediate_size]
  logits: GPUBuffer; // [chunk, vocab_size]
  last: GPUBuffer; // each reading sequence's last hidden state [sequences, hidden_size]
  lastNormed: GPUBuffer;
  batchRows: GPUBuffer; // the step's descriptor: vec2<u32> (pos, seq) [chunk]
  stepArgmax: GPUBuffer; // u32 [sequences]: a step's readouts, one row per sequence
  stepLogSumExp: GPUBuffer; // f32 [sequences]
  stepTopRow: GPUBuffer; // f32 [vocab_size]: the row a top-k readout sorts
  stepTopIds: GPUBuffer; // u32 [sequences, TOPK_STRIDE]
  stepTopLogits: GPUBuffer; // f32 [sequences, TOPK_STRIDE]
}

const MAX_TOPK = 1000;
/** A batched step's top-k results per sequence: 1024 words, so each row's binding offset is 256-byte aligned. */
const TOPK_STRIDE = 1024;

export class MistralModel {
  private readonly embed_tokens: GpuMatrix;
  private readonly layers: Layer[];
  private readonly norm: GPUBuffer;
  private readonly lm_head: GpuMatrix;
  /** Bytes of the checkpoint's tensors as stored. */
  readonly weightBytes: number;
  private readonly cache: KVCache;
  private readonly scratch: Scratch;
  private readonly ropeTable: GPUBuffer;
  private readonly attentionPlan: AttentionPlan;
  /** Where a 'hidden-states' readout collects its rows; made on first use. */
  private hiddenTrace: GPUBuffer | undefined;
  /** Adapters on the device (addAdapter), and the scratch their updates need. */
  private readonly adapters: DeviceLora[] = [];
  private loraScratch: { rank: number; u: GPUBuffer; up?: GPUBuffer } | undefined;
  /** Per region of the KV-cache pool: the adapter its positions were computed under (null: the base model). */
  private readonly regionAdapters: (DeviceLora | null)[];

  private constructor(
    readonly gpu: Gpu,
    /** The checkpoint folder the weights came from. */
    readonly dir: string,
    readonly config: ModelConfig,
    readonly contextLength: number,
    weights: DeviceWeights,
    /** Which kernel variants run, resolved once at load (prefillChunk: the step's rows). */
    private activePlan: KernelPlan,
    opts: ModelOptions,
  ) {
    this.embed_tokens = weights.embed_tokens;
    this.layers = weights.layers;
    this.norm = weights.norm;
    this.lm_head = weights.lm_head;
    this.weightBytes = weights.checkpointBytes;
    const { attention: strategy, kvCache, prefillChunk } = activePlan;
    this.cache = new KVCache(gpu, config, contextLength, kvCache, opts.sequences ?? 1, prefillChunk);
    this.regionAdapters = Array.from({ length: this.cache.sequences }, () => null);
    this.attentionPlan = {
      strategy,
      kvCache,
      partials: strategy === 'split' ? createAttentionPartials(gpu, config.num_attention_heads, config.head_dim) : undefined,
      segmentKeys: opts.attentionSegmentKeys,
    };
    this.ropeTable = ropeTable(gpu, contextLength, config.head_dim, config.rope_theta);
    this.scratch = this.allocateScratch(prefillChunk, this.cache.sequences);
  }

  /**
   * The plan a model of `config` loads with on `gpu`: the device's, then OPENCHAT_KERNELS, then
   * `opts.plan`, its prefillChunk cut to `opts.maxChunk`, the context and the binding limit (the
   * logits buffer holds a row per step row): the rows one step holds.
   */
  static planFor(gpu: Gpu, config: ModelConfig, contextLength: number, opts: Pick<ModelOptions, 'plan' | 'maxChunk'> = {}): KernelPlan {
    const plan = resolvePlan(gpu.profile, opts.plan);
    const byBinding = Math.floor(gpu.report.limits.maxStorageBufferBindingSize / (config.vocab_size * 4));
    return { ...plan, prefillChunk: Math.max(1, Math.min(opts.maxChunk ?? plan.prefillChunk, byBinding, contextLength)) };
  }

  static async load(gpu: Gpu, dir: string, opts: ModelOptions = {}): Promise<MistralModel> {
    const config = await loadConfig(dir, opts.files, { slidingWindow: opts.slidingWindow });
    const contextLength = contextLengthFor(config, opts.contextLength);
    const plan = MistralModel.planFor(gpu, config, contextLength, opts);
    const configFile = opts.contextLength === undefined ? (isGgufPath(dir) ? dir : join(dir, 'config.json')) : undefined;
    checkContextFits(gpu, config, contextLength, plan.kvCache, configFile);
    const most = poolCapacity(gpu, config, contextLength, plan);
    const sequences = opts.sequences ?? 1;
    if (sequences > most) {
      throw new RangeError(
        `a KV cache for ${sequences} sequences needs more than one storage binding per layer: at most ${most} fit ` +
          '(lower the batch size, or the context length)',
      );
    }
    const weights = await loadWeights(gpu, dir, config, opts);
    return new MistralModel(gpu, dir, config, contextLength, weights, plan, opts);
  }

  /** Which kernel variants run (src/kernels/plan.ts), resolved once at load. */
  get plan(): KernelPlan {
    return this.activePlan;
  }

  /**
   * Resolves the plan again with `forced` over the device's: for benchmarks comparing plans on
   * one loaded model. The KV cache, attention scratch and activation buffers were made for the
   * loaded plan, so attention, kvCache and prefillChunk stay as they are (load the model again
   * to change them).
   */
  replan(forced: Partial<KernelPlan>): void {
    const fixed = { attention: this.activePlan.attention, kvCache: this.activePlan.kvCache, prefillChunk: this.activePlan.prefillChunk };
    const next = resolvePlan(this.gpu.profile, { ...forced, ...fixed });
    for (const key of ['attention', 'kvCache', 'prefillChunk'] as const) {
      if (forced[key] !== undefined && forced[key] !== this.activePlan[key]) {
        throw new Error(`replan: ${key} was fixed at load (${this.activePlan[key]}); load the model with plan.${key} = '${forced[key]}' instead`);
      }
    }
    this.activePlan = next;
  }

  get maxChunk(): number {
    return this.scratch.chunk;
  }

  /** Positions run so far: the next forward() starts here. */
  get position(): number {
    return this.cache.length();
  }

  /** Forgets the conversation: the next forward() starts at position 0. */
  reset(): void {
    this.cache.truncate(0);
  }

  /**
   * Forgets every position from `position` on, so the next forward() runs there
   * (their keys and values are simply overwritten). See reusablePrefix for when
   * keeping a prefix is sound.
   */
  rewind(position: number): void {
    if (!Number.isInteger(position) || position < 0 || position > this.position) {
      throw new RangeError(`rewind: position ${position} is not in [0, ${this.position}]`);
    }
    this.cache.truncate(position);
  }

  /**
   * How many leading tokens of `ids` the KV cache already holds and can keep
   * (a chat's earlier turns): rewind() there and run the rest. At most
   * ids.length - 1, so the last token always runs and gives its logits. Under
   * `adapter` (none: the base model) only positions computed under it count.
   */
  reusablePrefix(ids: readonly number[], adapter?: DeviceLora): number {
    // Keys and values computed under another adapter (or none) are not this adapter's.
    if ((adapter ?? null) !== this.regionAdapters[0]) return 0;
    return this.cache.reusablePrefix(ids);
  }

  /**
   * Puts a LoRA adapter (loadLora against this model's config) on the device, beside
   * the base weights: any number can be loaded, and each forward() picks one or none.
   */
  addAdapter(weights: LoraWeights): DeviceLora {
    if (weights.layers.length !== this.config.num_hidden_layers) {
      throw new Error(`adapter ${weights.name} was loaded for ${weights.layers.length} layers; this model has ${this.config.num_hidden_layers}`);
    }
    const adapter = DeviceLora.upload(this.gpu, weights);
    this.adapters.push(adapter);
    const chunk = this.scratch.chunk;
    const had = this.loraScratch;
    const rank = Math.max(had?.rank ?? 0, adapter.maxRank);
    const needsUp = adapter.adaptsMlpInput || had?.up !== undefined;
    if (!had || rank > had.rank || (needsUp && !had.up)) {
      had?.u.destroy();
      had?.up?.destroy();
      this.loraScratch = {
        rank,
        u: createStorageBuffer(this.gpu, chunk * rank * 4, 'lora_u'),
        up: needsUp ? createStorageBuffer(this.gpu, chunk * this.config.intermediate_size * 4, 'lora_up') : undefined,
      };
    }
    return adapter;
  }

  /** Key/value slots per layer and sequence (the sliding window plus a prefill chunk, or the context without one). */
  get kvCacheSlots(): number {
    return this.cache.slots;
  }

  /** The KV-cache pool's regions: sequences that can be decoded together (`step`). */
  get sequences(): number {
    return this.cache.sequences;
  }

  /** Positions region `seq` holds (the next one a step runs there). */
  sequenceLength(seq: number): number {
    return this.cache.length(seq);
  }

  /** How many leading tokens of `ids` region `seq` holds and can keep under `adapter` (as reusablePrefix, per region). */
  reusablePrefixOf(seq: number, ids: readonly number[], adapter?: DeviceLora): number {
    if ((adapter ?? null) !== this.regionAdapters[seq]) return 0;
    return this.cache.reusablePrefix(ids, seq);
  }

  /** Forgets region `seq`'s positions from `position` on. */
  rewindSequence(seq: number, position: number): void {
    if (!Number.isInteger(position) || position < 0 || position > this.cache.length(seq)) {
      throw new RangeError(`rewind: position ${position} is not in [0, ${this.cache.length(seq)}] of sequence ${seq}`);
    }
    this.cache.truncate(position, seq);
  }

  /** Copies region `from`'s keys and values to region `to` on the device (n choices of one prompt). */
  copySequence(from: number, to: number): void {
    const enc = new Encoder(this.gpu);
    this.cache.copyRegion(enc, from, to);
    enc.submit();
    this.regionAdapters[to] = this.regionAdapters[from]!;
  }

  /** Device memory of the KV cache, all layers. */
  get kvCacheBytes(): number {
    return this.cache.bytes;
  }

  /**
   * Runs `ids` at positions position.. of region 0, appends them to the KV cache and reads back
   * what `readout` asks for: one sequence through `step`, a prompt in chunks of at most maxChunk
   * tokens (prefill steps), a single token as a decode step.
   */
  async forward(ids: readonly number[], readout: Readout, adapter?: DeviceLora): Promise<ForwardResult> {
    if (ids.length === 0) throw new Error('forward: no tokens');
    const pos0 = this.cache.length();
    const under = adapter ?? null;
    if (pos0 > 0 && under !== this.regionAdapters[0]) {
      throw new Error(
        `forward: the KV cache holds ${pos0} positions computed under ${this.regionAdapters[0] ? `adapter ${this.regionAdapters[0].name}` : 'the base model'}, ` +
          `not ${under ? `adapter ${under.name}` : 'the base model'}: rewind(0) first (reusablePrefix says how much can be kept)`,
      );
    }
    // Checked whole before the first chunk runs, so a bad request leaves the cache as it was.
    this.checkIds(ids, pos0);
    const all = readout.kind === 'all-logits' ? new Float32Array(ids.length * this.config.vocab_size) : undefined;
    let result: ForwardResult = {};
    // One token is a decode step; a prompt's chunks are prefill steps, its last one too whatever its length (as the scheduler runs them).
    const kind: BatchShape = ids.length === 1 ? 'decode' : 'prefill';
    for (let start = 0; start < ids.length; start += this.scratch.chunk) {
      const chunk = ids.slice(start, start + this.scratch.chunk);
      const isLast = start + chunk.length === ids.length;
      const [r] = await this.step([{ seq: 0, ids: chunk, readout: isLast || all ? readout : { kind: 'none' } }], kind, adapter);
      if (all && r!.logits) all.set(r!.logits, start * this.config.vocab_size);
      if (isLast) result = r!;
    }
    return all ? { logits: all } : result;
  }

  /** Throws unless every id is in the vocabulary and `ids` fit the context after `pos0` positions. */
  private checkIds(ids: readonly number[], pos0: number): void {
    if (pos0 + ids.length > this.contextLength) {
      throw new RangeError(`sequence of ${pos0 + ids.length} tokens exceeds the context length ${this.contextLength}`);
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocab_size) {
        throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.config.vocab_size})`);
      }
    }
  }

  /**
   * One step of the network, the only place it runs: each sequence's `ids` run at its region's
   * next positions, all rows of all sequences through the weights together, and each sequence
   * gets its readout (of its last row; 'all-logits' and 'hidden-states' in a step of one
   * sequence). A step is of one `kind`: 'decode' (one token for each of up to `sequences`
   * sequences) or 'prefill' (prompt chunks of at most maxChunk tokens per sequence, maxChunk rows
   * in all). A row's numbers never depend on what else is in the step: the products take a
   * kernel shape per kind whose sums per row do not change with the row count (matmul's
   * BatchShape, fused.ts), and each sequence attends its own region with the plan's strategy,
   * chosen from its own position (plan.attention, plan.prefillAttention), so a sequence gives the
   * same bits alone and under any load (batch.test.ts).
   */
  async step(batch: readonly StepSequence[], kind: BatchShape, adapter?: DeviceLora): Promise<ForwardResult[]> {
    const c = this.config;
    const under = adapter ?? null;
    if (under && !this.adapters.includes(under)) throw new Error(`adapter ${under.name} was not added to this model (addAdapter)`);
    const s = this.scratch;
    if (batch.length === 0) throw new Error('step: no tokens');
    const whole = batch.find((b) => b.readout.kind === 'all-logits' || b.readout.kind === 'hidden-states');
    if (whole && batch.length > 1) throw new Error(`step: a '${whole.readout.kind}' readout needs a step of one sequence`);
    const most = kind === 'decode' ? 1 : s.chunk;
    const seen = new Set<number>();
    const entries = batch.map((b, index) => {
      if (!Number.isInteger(b.seq) || b.seq < 0 || b.seq >= this.cache.sequences) {
        throw new RangeError(`step: sequence ${b.seq} is not a region of the KV-cache pool [0, ${this.cache.sequences})`);
      }
      if (seen.has(b.seq)) throw new Error(`step: sequence ${b.seq} appears twice in one step`);
      seen.add(b.seq);
      if (b.ids.length === 0 || b.ids.length > most) throw new RangeError(`step: a sequence runs 1 to ${most} tokens per ${kind} step, got ${b.ids.length}`);
      const pos0 = this.cache.length(b.seq);
      if (pos0 > 0 && under !== this.regionAdapters[b.seq]) {
        throw new Error(`step: sequence ${b.seq} holds positions computed under another adapter than this step's: rewind it to 0 first`);
      }
      this.checkIds(b.ids, pos0);
      const splits = kind === 'decode' && splitsDecode({ ...this.attentionShape, ...this.attentionPlan, pos0 });
      return { b, index, pos0, splits, row0: 0 };
    });
    // Rows in batch order, but a decode step's rows whose keys split come last: the others
    // attend in one dispatch (decodeAttentionRows), these one by one.
    const ordered = [...entries.filter((e) => !e.splits), ...entries.filter((e) => e.splits)];
    const rows: BatchRow[] = [];
    const ids: number[] = [];
    for (const e of ordered) {
      e.row0 = rows.length;
      e.b.ids.forEach((id, k) => {
        rows.push({ seq: e.b.seq, pos: e.pos0 + k });
        ids.push(id);
      });
    }
    const T = ids.length;
    if (T > s.chunk) throw new RangeError(`step: ${T} rows exceed the ${s.chunk} a step holds`);
    writeBatchRows(this.gpu, s.batchRows, rows, { sequences: this.cache.sequences, slots: this.cache.slots, window: c.sliding_window ?? 0 });
    writeBuffer(this.gpu, s.ids, new Uint32Array(ids));

    const enc = new Encoder(this.gpu);
    const rowBytes = c.hidden_size * 4;
    let trace: GPUBuffer | undefined;
    if (whole?.readout.kind === 'hidden-states') trace = this.hiddenTrace ??= createStorageBuffer(this.gpu, (this.layers.length + 2) * rowBytes, 'hidden_trace');
    const traceRow = (from: GPUBuffer, offset: number, row: number) => trace && enc.copy(from, offset, trace, row * rowBytes, rowBytes);
    embedding(enc, { ids: s.ids, table: this.embed_tokens, out: s.x, tokens: T });
    traceRow(s.x, (T - 1) * rowBytes, 0);
    const shape: StepShape = {
      tokens: T,
      batchRows: s.batchRows,
      lastPos: Math.max(...rows.map((r) => r.pos)),
      batch: kind,
      adapter,
      decodeRows: kind === 'decode' ? entries.filter((e) => !e.splits).length : 0,
      chunks: ordered.filter((e) => kind === 'prefill' || e.splits).map((e) => ({ seq: e.b.seq, row0: e.row0, tokens: e.b.ids.length, pos0: e.pos0 })),
    };
    const every = this.plan.submitLayers;
    for (let i = 0; i < this.layers.length; i++) {
      this.layer(enc, i, shape);
      traceRow(s.x, (T - 1) * rowBytes, i + 1);
      // Let the GPU start on the first layers while the rest is encoded.
      if (every > 0 && (i + 1) % every === 0 && i + 1 < this.layers.length) enc.submitSoFar();
    }
    const read = this.recordReadouts(enc, kind, ordered, traceRow);
    enc.submit();
    for (const b of batch) {
      this.cache.append(b.ids, b.seq);
      this.regionAdapters[b.seq] = under;
    }
    const results = await read();
    batch.forEach((b, i) => this.checkFiniteOutput(results[i]!, this.cache.length(b.seq) - b.ids.length, b.ids.length));
    return results;
  }

  /**
   * Records lm_head and the readouts of a step's sequences (`ordered`: in row order, with their
   * first rows) and returns the read-back, in batch order. Only the rows a readout needs run
   * lm_head: each reading sequence's last row, gathered into `last` (row j: reader j), or every
   * row of a one-sequence step that asks for all logits.
   */
  private recordReadouts(
    enc: Encoder,
    kind: BatchShape,
    ordered: readonly { b: StepSequence; index: number; row0: number }[],
    traceRow: (from: GPUBuffer, offset: number, row: number) => void,
  ): () => Promise<ForwardResult[]> {
    const c = this.config;
    const s = this.scratch;
    const rowBytes = c.hidden_size * 4;
    const vocabBytes = c.vocab_size * 4;
    const results: ForwardResult[] = ordered.map(() => ({}));
    const single = ordered.length === 1 ? ordered[0]!.b : undefined;
    if (single?.readout.kind === 'all-logits') {
      const T = single.ids.length;
      rmsNorm(enc, { x: s.x, weight: this.norm, y: s.h, tokens: T, dim: c.hidden_size, eps: c.rms_norm_eps });
      matmul(enc, { x: s.h, w: this.lm_head, y: s.logits, tokens: T, plan: this.plan, batch: kind });
      return async () => [{ logits: await readF32(this.gpu, s.logits, T * c.vocab_size) }];
    }
    const readers = ordered.filter((e) => e.b.readout.kind !== 'none');
    const B = readers.length;
    readers.forEach((e, j) => enc.copy(s.x, (e.row0 + e.b.ids.length - 1) * rowBytes, s.last, j * rowBytes, rowBytes));
    if (B === 0) return async () => results;
    rmsNorm(enc, { x: s.last, weight: this.norm, y: s.lastNormed, tokens: B, dim: c.hidden_size, eps: c.rms_norm_eps });
    traceRow(s.lastNormed, 0, this.layers.length + 1);
    matmul(enc, { x: s.lastNormed, w: this.lm_head, y: s.logits, tokens: B, plan: this.plan, batch: kind });
    const has = (k: Readout['kind']) => readers.some((e) => e.b.readout.kind === k);
    const wantsLse = readers.some((e) => e.b.readout.kind === 'topk' && e.b.readout.logSumExp);
    if (has('argmax')) argmax(enc, { logits: s.logits, n: c.vocab_size, rows: B, out: s.stepArgmax });
    if (wantsLse) logSumExp(enc, { logits: s.logits, n: c.vocab_size, rows: B, out: s.stepLogSumExp });
    readers.forEach(({ b: { readout } }, j) => {
      if (readout.kind !== 'topk') return;
      if (readout.k < 1 || readout.k > MAX_TOPK) throw new RangeError(`top-k readout needs 1 <= k <= ${MAX_TOPK}`);
      enc.copy(s.logits, j * vocabBytes, s.stepTopRow, 0, vocabBytes);
      const at = (buffer: GPUBuffer) => ({ buffer, offset: j * TOPK_STRIDE * 4, size: readout.k * 4 });
      topK(enc, { logits: s.stepTopRow, n: c.vocab_size, k: readout.k, outIds: at(s.stepTopIds), outValues: at(s.stepTopLogits) });
    });
    return async () => {
      const argmaxes = has('argmax') ? await readU32(this.gpu, s.stepArgmax, B) : undefined;
      const logits = has('logits') ? await readF32(this.gpu, s.logits, B * c.vocab_size) : undefined;
      const topIds = has('topk') ? await readU32(this.gpu, s.stepTopIds, B * TOPK_STRIDE) : undefined;
      const topLogits = has('topk') ? await readF32(this.gpu, s.stepTopLogits, B * TOPK_STRIDE) : undefined;
      const lse = wantsLse ? await readF32(this.gpu, s.stepLogSumExp, B) : undefined;
      const hidden = has('hidden-states') ? await readF32(this.gpu, this.hiddenTrace!, (this.layers.length + 2) * c.hidden_size) : undefined;
      const out: ForwardResult[] = Array.from({ length: ordered.length }, () => ({}));
      readers.forEach(({ b: { readout: r }, index }, j) => {
        if (r.kind === 'argmax') out[index] = { argmax: argmaxes![j] };
        if (r.kind === 'logits') out[index] = { logits: logits!.slice(j * c.vocab_size, (j + 1) * c.vocab_size) };
        if (r.kind === 'hidden-states') out[index] = { hiddenStates: hidden! };
        if (r.kind === 'topk') {
          const from = j * TOPK_STRIDE;
          out[index] = {
            topk: {
              ids: topIds!.slice(from, from + r.k),
              logits: topLogits!.slice(from, from + r.k),
              ...(r.logSumExp ? { logSumExp: lse![j]! } : {}),
            },
          };
        }
      });
      return out;
    };
  }

  /**
   * The weights were checked finite at load, so a NaN here means activations
   * overflowed float32: say so, and where to look, rather than let sampling
   * fail on "logit 0 is NaN". (An argmax readout brings no logits back to look at.)
   */
  private checkFiniteOutput(r: ForwardResult, pos0: number, tokens: number): void {
    const values = r.logits ?? r.topk?.logits;
    if (!values) return;
    for (let i = 0; i < values.length; i++) {
      if (Number.isFinite(values[i]!)) continue;
      const vocab = this.config.vocab_size;
      const position = r.logits ? pos0 + (r.logits.length === vocab ? tokens - 1 : Math.floor(i / vocab)) : pos0 + tokens - 1;
      throw new RangeError(
        `the model produced a non-finite logit (${values[i]}) at position ${position}: its weights in ${this.dir} are finite, ` +
          'so the activations overflowed float32. Suspect the checkpoint: weights of an unusual scale, or config.json values ' +
          '(rms_norm_eps, rope_theta, hidden sizes) that do not belong to these weights',
      );
    }
  }

  /** The head shape and window every attention call of this model passes. */
  private get attentionShape() {
    const c = this.config;
    return { heads: c.num_attention_heads, kvHeads: c.num_key_value_heads, headDim: c.head_dim, window: c.sliding_window ?? 0 };
  }

  /**
   * One decoder layer, as in the paper: pre-norm attention block, then pre-norm SwiGLU MLP
   * block, over a step's rows (StepShape) under the LoRA adapter they run under, if any.
   */
  private layer(enc: Encoder, i: number, step: StepShape): void {
    const { tokens: T, batchRows, batch } = step;
    const A = step.adapter?.layers[i];
    const c = this.config;
    const s = this.scratch;
    const L = this.layers[i]!;
    // y += scale * (x lora_A^T) lora_B^T beside the projection key, if the adapter adapts it.
    const lora = (x: GPUBuffer, key: LinearKey, y: GPUBuffer) => {
      const m = A?.[key];
      if (m) loraUpdate(enc, { x, lora: m, y, u: this.loraScratch!.u, tokens: T });
    };
    const mm = { tokens: T, plan: this.plan, batch }; // one kernel shape per kind, whatever the row count
    const eps = c.rms_norm_eps;

    // x = x + o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = rms_norm(x)
    normQKV(enc, {
      x: s.x, norm: { weight: L.input_layernorm, eps }, h: s.h, writeH: !!(A?.q_proj || A?.k_proj || A?.v_proj),
      q_proj: L.q_proj, k_proj: L.k_proj, v_proj: L.v_proj, q: s.q, k: s.k, v: s.v, ...mm,
    });
    lora(s.h, 'q_proj', s.q);
    lora(s.h, 'k_proj', s.k);
    lora(s.h, 'v_proj', s.v);
    const { heads, kvHeads, headDim } = this.attentionShape;
    rope(enc, { q: s.q, k: s.k, table: this.ropeTable, tokens: T, heads, kvHeads, headDim, pos0: step.lastPos, batchRows });
    // Each sequence attends its own region (past keys from the cache, the step's own from s.k / s.v),
    // then the step's keys go to their regions.
    const kv = { kNew: s.k, vNew: s.v, kCache: this.cache.keys[i]!, vCache: this.cache.values[i]!, slots: this.cache.slots, q: s.q, out: s.attn, ...this.attentionShape };
    if (step.decodeRows > 0) decodeAttentionRows(enc, { ...kv, batchRows, tokens: step.decodeRows, kvCache: this.cache.dtype });
    // A prefill step's chunks take the prefill strategy at any length; a decode step's rows here are those whose keys split.
    const prefill = batch === 'prefill' ? this.plan.prefillAttention : undefined;
    for (const chunk of step.chunks) attention(enc, { ...kv, ...chunk, ...this.attentionPlan, prefill });
    kvWriteRows(enc, { ...kv, batchRows, tokens: T, dtype: this.cache.dtype });
    matmul(enc, { x: s.attn, w: L.o_proj, y: s.x, ...mm, accumulate: true });
    lora(s.attn, 'o_proj', s.x);

    // x = x + down_proj(silu(gate_proj(h)) * up_proj(h)),  h = rms_norm(x)
    if (A?.gate_proj || A?.up_proj) this.swigluUnfused(enc, L, A, T, batch);
    else normSwiGLU(enc, { x: s.x, norm: { weight: L.post_attention_layernorm, eps }, h: s.h, gate: L.gate_proj, up: L.up_proj, y: s.mlp, ...mm });
    matmul(enc, { x: s.mlp, w: L.down_proj, y: s.x, ...mm, accumulate: true });
    lora(s.mlp, 'down_proj', s.x);
  }

  /**
   * mlp = silu(gate_proj(h) + its update) * (up_proj(h) + its update), h = rms_norm(x): the
   * fused matmulSwiGLU cannot add an adapter's updates before the silu, so with an adapter on
   * gate_proj or up_proj the two products run apart and silu_mul joins them.
   */
  private swigluUnfused(enc: Encoder, L: Layer, A: LayerLora, T: number, batch?: BatchShape): void {
    const c = this.config;
    const s = this.scratch;
    const mm = { tokens: T, plan: this.plan, batch };
    const { u, up } = this.loraScratch!;
    rmsNorm(enc, { x: s.x, weight: L.post_attention_layernorm, y: s.h, tokens: T, dim: c.hidden_size, eps: c.rms_norm_eps });
    matmul(enc, { x: s.h, w: L.gate_proj, y: s.mlp, ...mm });
    loraUpdate(enc, { x: s.h, lora: A.gate_proj, y: s.mlp, u, tokens: T });
    matmul(enc, { x: s.h, w: L.up_proj, y: up!, ...mm });
    loraUpdate(enc, { x: s.h, lora: A.up_proj, y: up!, u, tokens: T });
    siluMul(enc, { gate: s.mlp, up: up!, n: T * this.config.intermediate_size });
  }

  private allocateScratch(chunk: number, sequences: number): Scratch {
    const c = this.config;
    const f32 = (n: number, label: string) => createStorageBuffer(this.gpu, n * 4, label);
    return {
      chunk,
      ids: f32(chunk, 'ids'),
      x: f32(chunk * c.hidden_size, 'x'),
      h: f32(chunk * c.hidden_size, 'h'),
      q: f32(chunk * c.num_attention_heads * c.head_dim, 'q'),
      k: f32(chunk * c.num_key_value_heads * c.head_dim, 'k'),
      v: f32(chunk * c.num_key_value_heads * c.head_dim, 'v'),
      attn: f32(chunk * c.num_attention_heads * c.head_dim, 'attn'),
      mlp: f32(chunk * c.intermediate_size, 'mlp'),
      logits: f32(chunk * c.vocab_size, 'logits'),
      last: f32(sequences * c.hidden_size, 'last'), // one row per reading sequence
      lastNormed: f32(sequences * c.hidden_size, 'last_normed'),
      batchRows: createStorageBuffer(this.gpu, chunk * BATCH_ROW_BYTES, 'batch_rows'),
      stepArgmax: f32(sequences, 'step_argmax'),
      stepLogSumExp: f32(sequences, 'step_log_sum_exp'),
      stepTopRow: f32(c.vocab_size, 'step_top_row'),
      stepTopIds: f32(sequences * TOPK_STRIDE, 'step_top_ids'),
      stepTopLogits: f32(sequences * TOPK_STRIDE, 'step_top_logits'),
    };
  }

  /** Bytes the weights take on the device (quantized: codes and scales; norms widened to f32). */
  get weightDeviceBytes(): number {
    const seen = new Set<GPUBuffer>();
    for (const L of this.layers) for (const w of Object.values(L)) for (const b of 'parts' in w ? w.parts.map((p) => p.buffer) : [w]) seen.add(b);
    for (const m of [this.embed_tokens, this.lm_head]) for (const p of m.parts) seen.add(p.buffer);
    seen.add(this.norm);
    let n = 0;
    for (const b of seen) n += b.size;
    return n;
  }

  /** Frees every device buffer of the model. */
  destroy(): void {
    const seen = new Set<GpuMatrix>();
    for (const L of this.layers) {
      for (const w of Object.values(L)) {
        if ('parts' in w) seen.add(w);
        else w.destroy();
      }
    }
    seen.add(this.embed_tokens).add(this.lm_head);
    for (const m of seen) destroyMatrix(m);
    this.norm.destroy();
    this.ropeTable.destroy();
    this.hiddenTrace?.destroy();
    for (const a of this.adapters) a.destroy();
    this.loraScratch?.u.destroy();
    this.loraScratch?.up?.destroy();
    this.cache.destroy();
    if (this.attentionPlan.partials) destroyAttentionPartials(this.attentionPlan.partials);
    for (const [key, b] of Object.entries(this.scratch)) if (key !== 'chunk') (b as GPUBuffer).destroy();
  }
}

/**
 * Refuses, before anything is allocated, a context the device cannot hold: the
 * RoPE table ([context, head_dim] f32) and, without a sliding window, each
 * layer's key or value cache (a slot per position) must each fit one storage
 * binding. `configFile` is set when the context is the config's own
 * max_position_embeddings rather than one the caller asked for.
 */
function checkContextFits(gpu: Gpu, config: ModelConfig, contextLength: number, kvCache: KvCacheDtype, configFile?: string): void {
  const limits = gpu.report.limits;
  const binding = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const byRope = Math.floor(binding / (config.head_dim * 4));
  // The cache holds min(window, context) slots per layer: a window that fits bounds nothing.
  const slotBytes = KVCache.slotBytes(config, kvCache);
  const window = config.sliding_window;
  const byCache = window !== null && window * slotBytes <= binding ? Infinity : Math.floor(binding / slotBytes);
  const max = Math.min(byRope, byCache);
  if (contextLength <= max) return;
  const what = configFile
    ? `${configFile}: max_position_embeddings ${contextLength} is more context than this device can hold`
    : `a context of ${contextLength} tokens is more than this device can hold`;
  const why = byRope <= byCache ? `the RoPE table (head_dim ${config.head_dim} f32 values per position)` : "each layer's KV cache (a slot per position)";
  throw new RangeError(
    `${what}: ${why} must fit one storage binding of ${binding} bytes, so at most ${max} tokens. Pass a smaller context length (at most ${max})`,
  );
}

/**
 * The most sequences a KV-cache pool can hold on `gpu`: each layer's keys (or values) of every
 * sequence's region must fit one storage binding.
 */
export function poolCapacity(gpu: Gpu, config: ModelConfig, contextLength: number, plan: Pick<KernelPlan, 'kvCache' | 'prefillChunk'>): number {
  const limits = gpu.report.limits;
  const binding = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  return Math.floor(binding / (KVCache.regionSlots(config, contextLength, plan.prefillChunk) * KVCache.slotBytes(config, plan.kvCache)));
}
