/**
 * The Mistral forward pass on WebGPU: a Hugging Face checkpoint streamed onto
 * the device, a KV cache, and one decoder layer per screen below (`layer()`).
 * Every step is one WGSL kernel from src/kernels; a whole chunk of tokens is
 * recorded into one command buffer and submitted once (or every plan.submitLayers
 * layers). Which variant of each kernel runs is the kernel plan (src/kernels/plan.ts),
 * resolved once at load; layer() reads the same whatever the plan.
 */
import { join } from 'node:path';
import type { Gpu } from '../gpu/device.ts';
import { allocateMatrix, bytesPerElement, createStorageBuffer, destroyMatrix, quantLayout, readF32, readU32, writeBuffer, type GpuMatrix, type QuantFormat } from '../gpu/buffers.ts';
import { Encoder } from '../gpu/encoder.ts';
import { decodeToF32 } from '../util/half.ts';
import { contextLengthFor, expectedTensors, layerTensors, loadConfig, type LayerWeights, type ModelConfig } from './config.ts';
import { KVCache } from './kv_cache.ts';
import { Checkpoint, CheckpointError } from './safetensors.ts';
import type { ModelSource } from '../util/files.ts';
import { checkFinite, validateCheckpoint } from './weights.ts';
import { quantizeRows } from '../kernels/quant.ref.ts';
import { folderQuantization, quantizationFor, quantizedMatrices, scalesName, validateQuantized } from './quantized.ts';
import { embedding } from '../kernels/embedding.ts';
import { rmsNorm } from '../kernels/rmsnorm.ts';
import { matmul, MATVEC_MAX_TOKENS, type BatchShape } from '../kernels/matmul/index.ts';
import { normQKV, normSwiGLU } from '../kernels/matmul/fused.ts';
import { resolvePlan, type KernelPlan } from '../kernels/plan.ts';
import { rope, ropeTable } from '../kernels/rope.ts';
import { attention, batchedAttention, createAttentionPartials, decodeAttentionRows, destroyAttentionPartials, type AttentionPartials, type AttentionStrategy } from '../kernels/attention/index.ts';
import { kvWrite, kvWriteRows } from '../kernels/kv_write.ts';
import { BATCH_ROW_BYTES, writeBatchRows, type BatchRow } from '../kernels/batch_rows.ts';
import type { KvCacheDtype } from '../kernels/kv_cache.ts';
import { argmax } from '../kernels/argmax.ts';
import { topK } from '../kernels/topk.ts';
import { logSumExp } from '../kernels/logsumexp.ts';
import { loraUpdate, siluMul } from '../kernels/lora/index.ts';
import { DeviceLora, type LinearKey, type LoraWeights } from './lora.ts';

export interface LoadProgress {
  tensorsDone: number;
  tensorsTotal: number;
  bytesDone: number;
  bytesTotal: number;
  seconds: number;
}

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
  /** Sequences the KV-cache pool holds at once (continuous batching, `step`); default 1. */
  sequences?: number;
}

/**
 * Most prompt tokens a prefill step runs: a long prompt is prefilled in chunks of this many
 * tokens, taking turns with the running sequences' decode steps, so it never freezes them for
 * long; a prompt up to this long is one step, so a new request's first token waits for at most
 * one decode step of the others (bench/RESULTS.md: 32 made a 40-token prompt's TTFT beside 7
 * streams 2.2x its alone figure on 1b). Each KV-cache region holds this many - 1 slots beyond
 * the window.
 */
export const STEP_PREFILL_TOKENS = 64;

/** What one sequence of a batched step reads back (for its last row). */
export type StepReadout = Extract<Readout, { kind: 'none' | 'argmax' | 'topk' | 'logits' }>;

/** One sequence's share of a batched step: `ids` run at its region's next positions. */
export interface StepSequence {
  /** Its region of the KV-cache pool, 0 .. sequences - 1. */
  seq: number;
  ids: readonly number[];
  readout: StepReadout;
}

/**
 * The shape of one forward step, passed down to every layer: a chunk of one sequence at
 * positions pos0.. (`forward`, region 0), or a batched step whose rows carry their own
 * positions and regions in the batch descriptor `rows` (`step`; pos0 is then its last position).
 */
interface StepShape {
  tokens: number;
  pos0: number;
  rows?: GPUBuffer;
  /** A batched step's kind: its matmuls' kernel shape, the same whatever its size. */
  batch?: BatchShape;
  /** The LoRA adapter every row of the step runs under, if any. */
  adapter?: DeviceLora;
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

/** A decoder layer on the device: norm weights widened to f32, projections in their stored dtype. */
type Layer = LayerWeights<GPUBuffer, GpuMatrix>;
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
  last: GPUBuffer; // the last position's hidden state [hidden_size]
  lastNormed: GPUBuffer;
  topIds: GPUBuffer;
  topLogits: GPUBuffer;
  logSumExp: GPUBuffer; // f32 [1], with a top-k readout that asks for it
  rows: GPUBuffer; // a batched step's descriptor: vec2<u32> (pos, seq) [chunk]
  stepArgmax: GPUBuffer; // u32 [sequences]: a batched step's readouts, one row per sequence
  stepLogSumExp: GPUBuffer; // f32 [sequences]
  stepTopRow: GPUBuffer; // f32 [vocab_size]: the row a top-k readout sorts
  stepTopIds: GPUBuffer; // u32 [sequences, TOPK_STRIDE]
  stepTopLogits: GPUBuffer; // f32 [sequences, TOPK_STRIDE]
}

const STAGING_BYTES = 32 * 2 ** 20; // host memory used while streaming weights in
const MAX_TOPK = 1000;
/** A batched step's top-k results per sequence: 1024 words, so each row's binding offset is 256-byte aligned. */
const TOPK_STRIDE = 1024;

export class MistralModel {
  private readonly cache: KVCache;
  private readonly scratch: Scratch;
  private readonly ropeTable: GPUBuffer;
  private readonly attentionPlan: AttentionPlan;
  /** Where a 'hidden-states' readout collects its rows; made on first use. */
  private hiddenTrace: GPUBuffer | undefined;
  /** Adapters on the device (addAdapter), and the scratch their updates need. */
  private readonly adapters: DeviceLora[] = [];
  private loraScratch: { rank: number; u: GPUBuffer; up?: GPUBuffer } | undefined;
  /** The adapter the KV cache's positions were computed under (null: the base model). */
  /** Per region of the KV-cache pool: the adapter its positions were computed under (null: the base model). */
  private readonly regionAdapters: (DeviceLora | null)[];

  private constructor(
    readonly gpu: Gpu,
    /** The checkpoint folder the weights came from. */
    readonly dir: string,
    readonly config: ModelConfig,
    readonly contextLength: number,
    private readonly embed_tokens: GpuMatrix,
    private readonly layers: Layer[],
    private readonly norm: GPUBuffer,
    private readonly lm_head: GpuMatrix,
    readonly weightBytes: number,
    maxChunk: number,
    /** Which kernel variants run, resolved once at load. */
    private activePlan: KernelPlan,
    opts: ModelOptions,
  ) {
    const { attention: strategy, kvCache } = activePlan;
    this.cache = new KVCache(gpu, config, contextLength, kvCache, opts.sequences ?? 1, STEP_PREFILL_TOKENS);
    this.regionAdapters = Array.from({ length: this.cache.sequences }, () => null);
    this.attentionPlan = {
      strategy,
      kvCache,
      partials: strategy === 'split' ? createAttentionPartials(gpu, config.num_attention_heads, config.head_dim) : undefined,
      segmentKeys: opts.attentionSegmentKeys,
    };
    this.ropeTable = ropeTable(gpu, contextLength, config.head_dim, config.rope_theta);
    this.scratch = this.allocateScratch(maxChunk, this.cache.sequences);
  }

  static async load(gpu: Gpu, dir: string, opts: ModelOptions = {}): Promise<MistralModel> {
    const config = loadConfig(dir, opts.files);
    const contextLength = contextLengthFor(config, opts.contextLength);
    const plan = resolvePlan(gpu.profile, opts.plan);
    const configFile = opts.contextLength === undefined ? join(dir, 'config.json') : undefined;
    checkContextFits(gpu, config, contextLength, plan.kvCache, configFile);
    checkPoolFits(gpu, config, contextLength, plan.kvCache, opts.sequences ?? 1);
    const stored = folderQuantization(dir, opts.files);
    if (stored && opts.quantize && opts.quantize !== stored.format) {
      throw new Error(`${dir} is already quantized to ${stored.format}; quantizing it again to ${opts.quantize} would add the errors of both: load the original checkpoint with --quantize ${opts.quantize}`);
    }
    const ckpt = Checkpoint.open(dir, opts.files);
    try {
      const prequantized = stored ? validateQuantized(ckpt, config, stored) : new Map<string, QuantFormat>();
      if (!stored) validateCheckpoint(ckpt, config);
      const loader = new WeightLoader(gpu, ckpt, [...expectedTensors(config).keys()], opts.onProgress, prequantized);
      // What --quantize makes of each matrix (none: as stored).
      const atLoad = opts.quantize ? quantizedMatrices(config, quantizationFor(config, opts.quantize)) : new Map<string, QuantFormat>();
      const layers: Layer[] = [];
      for (let i = 0; i < config.num_hidden_layers; i++) {
        const weights: [string, GPUBuffer | GpuMatrix][] = [];
        for (const t of layerTensors(config, i)) weights.push([t.key, t.kind === 'norm' ? loader.vector(t.name) : await loader.matrix(t.name, atLoad.get(t.name))]);
        // Every key of Layer comes from the table layerTensors() walks, each of its kind, so the object is complete.
        layers.push(Object.fromEntries(weights) as Layer);
      }
      const embed = await loader.matrix('model.embed_tokens.weight', atLoad.get('model.embed_tokens.weight'));
      const head = config.tie_word_embeddings ? embed : await loader.matrix('lm_head.weight', atLoad.get('lm_head.weight'));
      const norm = loader.vector('model.norm.weight');
      await gpu.device.queue.onSubmittedWorkDone();
      // Bound the logits buffer by the binding limit (a 128k vocabulary would not fit 256 rows).
      const byBinding = Math.floor(gpu.report.limits.maxStorageBufferBindingSize / (config.vocab_size * 4));
      const maxChunk = Math.max(1, Math.min(opts.maxChunk ?? plan.prefillChunk, byBinding, contextLength));
      // The plan reports the chunk the buffers were made for, which the context or the binding limit may have cut.
      return new MistralModel(gpu, dir, config, contextLength, embed, layers, norm, head, ckpt.totalBytes, maxChunk, { ...plan, prefillChunk: maxChunk }, opts);
    } finally {
      ckpt.close();
    }
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
   * Runs `ids` at positions position.. (in chunks of at most maxChunk tokens),
   * appends them to the KV cache and reads back what `readout` asks for.
   */
  async forward(ids: readonly number[], readout: Readout, adapter?: DeviceLora): Promise<ForwardResult> {
    if (ids.length === 0) throw new Error('forward: no tokens');
    const pos0 = this.cache.length();
    const under = adapter ?? null;
    if (under && !this.adapters.includes(under)) throw new Error(`adapter ${under.name} was not added to this model (addAdapter)`);
    if (pos0 > 0 && under !== this.regionAdapters[0]) {
      throw new Error(
        `forward: the KV cache holds ${pos0} positions computed under ${this.regionAdapters[0] ? `adapter ${this.regionAdapters[0].name}` : 'the base model'}, ` +
          `not ${under ? `adapter ${under.name}` : 'the base model'}: rewind(0) first (reusablePrefix says how much can be kept)`,
      );
    }
    if (pos0 + ids.length > this.contextLength) {
      throw new RangeError(`sequence of ${pos0 + ids.length} tokens exceeds the context length ${this.contextLength}`);
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocab_size) {
        throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.config.vocab_size})`);
      }
    }
    this.regionAdapters[0] = under;
    const all = readout.kind === 'all-logits' ? new Float32Array(ids.length * this.config.vocab_size) : undefined;
    let result: ForwardResult = {};
    for (let start = 0; start < ids.length; start += this.scratch.chunk) {
      const chunk = ids.slice(start, start + this.scratch.chunk);
      const isLast = start + chunk.length === ids.length;
      const r = await this.runChunk(chunk, isLast || all ? readout : { kind: 'none' }, under);
      if (all && r.logits) all.set(r.logits, start * this.config.vocab_size);
      if (isLast) result = r;
    }
    const out = all ? { logits: all } : result;
    this.checkFiniteOutput(out, pos0, ids.length);
    return out;
  }

  /**
   * One batched step (continuous batching): each sequence's `ids` run at its region's next
   * positions, all rows of all sequences through the weights together, and each sequence gets
   * its readout for its last row. A step is of one `kind`: 'decode' (one token for each of up
   * to MATVEC_MAX_TOKENS sequences) or 'prefill' (prompt chunks of at most STEP_PREFILL_TOKENS
   * per sequence, maxChunk rows in all). A row's numbers never depend on what else is in the
   * step: each kind runs kernels that add a row's sums the same whatever its size (matmul's
   * BatchShape, fused.ts), and attention reads each row's own region, so a sequence decodes the
   * same alone and under load. A decode step's rows take forward()'s one-token kernels wherever
   * those add alike (fused.ts; attention through tiled.wgsl's decode loop), so one sequence
   * decodes through step() as through forward(): bit for bit under matvec=rows with tiled
   * attention and q/k/v unfolded, to f32 rounding otherwise (batch.test.ts).
   */
  async step(batch: readonly StepSequence[], kind: BatchShape, adapter?: DeviceLora): Promise<ForwardResult[]> {
    const c = this.config;
    const under = adapter ?? null;
    if (under && !this.adapters.includes(under)) throw new Error(`adapter ${under.name} was not added to this model (addAdapter)`);
    const s = this.scratch;
    const rows: BatchRow[] = [];
    const ids: number[] = [];
    const seen = new Set<number>();
    for (const b of batch) {
      if (!Number.isInteger(b.seq) || b.seq < 0 || b.seq >= this.cache.sequences) {
        throw new RangeError(`step: sequence ${b.seq} is not a region of the KV-cache pool [0, ${this.cache.sequences})`);
      }
      if (seen.has(b.seq)) throw new Error(`step: sequence ${b.seq} appears twice in one step`);
      seen.add(b.seq);
      const most = kind === 'decode' ? 1 : STEP_PREFILL_TOKENS;
      if (b.ids.length === 0 || b.ids.length > most) throw new RangeError(`step: a sequence runs 1 to ${most} tokens per ${kind} step, got ${b.ids.length}`);
      const pos0 = this.cache.length(b.seq);
      if (pos0 > 0 && under !== this.regionAdapters[b.seq]) {
        throw new Error(`step: sequence ${b.seq} holds positions computed under another adapter than this step's: rewind it to 0 first`);
      }
      if (pos0 + b.ids.length > this.contextLength) {
        throw new RangeError(`sequence of ${pos0 + b.ids.length} tokens exceeds the context length ${this.contextLength}`);
      }
      b.ids.forEach((id, k) => {
        if (!Number.isInteger(id) || id < 0 || id >= c.vocab_size) throw new RangeError(`token id ${id} is outside the vocabulary [0, ${c.vocab_size})`);
        rows.push({ seq: b.seq, pos: pos0 + k });
        ids.push(id);
      });
    }
    const T = ids.length;
    if (T === 0) throw new Error('step: no tokens');
    if (T > s.chunk) throw new RangeError(`step: ${T} rows exceed the ${s.chunk} a step holds`);
    if (kind === 'decode' && T > MATVEC_MAX_TOKENS) throw new RangeError(`step: a decode step holds at most ${MATVEC_MAX_TOKENS} sequences, got ${T}`);
    writeBatchRows(this.gpu, s.rows, rows, { sequences: this.cache.sequences, slots: this.cache.slots, window: c.sliding_window ?? 0 });
    writeBuffer(this.gpu, s.ids, new Uint32Array(ids));

    const enc = new Encoder(this.gpu);
    embedding(enc, { ids: s.ids, table: this.embed_tokens, out: s.x, tokens: T });
    const shape: StepShape = { tokens: T, pos0: Math.max(...rows.map((r) => r.pos)), rows: s.rows, batch: kind, adapter };
    const every = this.plan.submitLayers;
    for (let i = 0; i < this.layers.length; i++) {
      this.layer(enc, i, shape);
      if (every > 0 && (i + 1) % every === 0 && i + 1 < this.layers.length) enc.submitSoFar();
    }

    // lm_head on each reading sequence's last row only, gathered into `last` (row j: reader j).
    const readers: { at: number; readout: Exclude<StepReadout, { kind: 'none' }> }[] = [];
    let end = 0;
    for (const b of batch) {
      end += b.ids.length;
      if (b.readout.kind !== 'none') readers.push({ at: end - 1, readout: b.readout });
    }
    const B = readers.length;
    const rowBytes = c.hidden_size * 4;
    const vocabBytes = c.vocab_size * 4;
    readers.forEach((r, j) => enc.copy(s.x, r.at * rowBytes, s.last, j * rowBytes, rowBytes));
    if (B > 0) {
      rmsNorm(enc, { x: s.last, weight: this.norm, y: s.lastNormed, tokens: B, dim: c.hidden_size, eps: c.rms_norm_eps });
      matmul(enc, { x: s.lastNormed, w: this.lm_head, y: s.logits, tokens: B, plan: this.plan, batch: kind });
      if (readers.some((r) => r.readout.kind === 'argmax')) argmax(enc, { logits: s.logits, n: c.vocab_size, rows: B, out: s.stepArgmax });
      if (readers.some((r) => r.readout.kind === 'topk' && r.readout.logSumExp)) {
        logSumExp(enc, { logits: s.logits, n: c.vocab_size, rows: B, out: s.stepLogSumExp });
      }
      readers.forEach(({ readout }, j) => {
        if (readout.kind !== 'topk') return;
        if (readout.k < 1 || readout.k > MAX_TOPK) throw new RangeError(`top-k readout needs 1 <= k <= ${MAX_TOPK}`);
        enc.copy(s.logits, j * vocabBytes, s.stepTopRow, 0, vocabBytes);
        const at = (buffer: GPUBuffer) => ({ buffer, offset: j * TOPK_STRIDE * 4, size: readout.k * 4 });
        topK(enc, { logits: s.stepTopRow, n: c.vocab_size, k: readout.k, outIds: at(s.stepTopIds), outValues: at(s.stepTopLogits) });
      });
    }
    enc.submit();
    for (const b of batch) {
      this.cache.append(b.ids, b.seq);
      this.regionAdapters[b.seq] = under;
    }

    const kinds = new Set(readers.map((r) => r.readout.kind));
    const argmaxes = kinds.has('argmax') ? await readU32(this.gpu, s.stepArgmax, B) : undefined;
    const logits = kinds.has('logits') ? await readF32(this.gpu, s.logits, B * c.vocab_size) : undefined;
    const topIds = kinds.has('topk') ? await readU32(this.gpu, s.stepTopIds, B * TOPK_STRIDE) : undefined;
    const topLogits = kinds.has('topk') ? await readF32(this.gpu, s.stepTopLogits, B * TOPK_STRIDE) : undefined;
    const lse = readers.some((r) => r.readout.kind === 'topk' && r.readout.logSumExp) ? await readF32(this.gpu, s.stepLogSumExp, B) : undefined;
    const results: ForwardResult[] = [];
    let j = 0;
    for (const b of batch) {
      const r = b.readout;
      let out: ForwardResult = {};
      if (r.kind === 'argmax') out = { argmax: argmaxes![j] };
      if (r.kind === 'logits') out = { logits: logits!.slice(j * c.vocab_size, (j + 1) * c.vocab_size) };
      if (r.kind === 'topk') {
        const from = j * TOPK_STRIDE;
        out = {
          topk: {
            ids: topIds!.slice(from, from + r.k),
            logits: topLogits!.slice(from, from + r.k),
            ...(r.logSumExp ? { logSumExp: lse![j]! } : {}),
          },
        };
      }
      if (r.kind !== 'none') {
        this.checkFiniteOutput(out, this.cache.length(b.seq) - 1, 1);
        j++;
      }
      results.push(out);
    }
    return results;
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

  /** One chunk: embed, every decoder layer, final norm, lm_head on the rows the readout needs. */
  private async runChunk(ids: number[], readout: Readout, adapter: DeviceLora | null): Promise<ForwardResult> {
    const c = this.config;
    const s = this.scratch;
    const T = ids.length;
    const pos0 = this.cache.length();
    writeBuffer(this.gpu, s.ids, new Uint32Array(ids));

    const enc = new Encoder(this.gpu);
    const rowBytes = c.hidden_size * 4;
    let trace: GPUBuffer | undefined;
    if (readout.kind === 'hidden-states') trace = this.hiddenTrace ??= createStorageBuffer(this.gpu, (this.layers.length + 2) * rowBytes, 'hidden_trace');
    const traceRow = (from: GPUBuffer, offset: number, row: number) => trace && enc.copy(from, offset, trace, row * rowBytes, rowBytes);
    embedding(enc, { ids: s.ids, table: this.embed_tokens, out: s.x, tokens: T });
    traceRow(s.x, (T - 1) * rowBytes, 0);
    const every = this.plan.submitLayers;
    for (let i = 0; i < this.layers.length; i++) {
      this.layer(enc, i, { tokens: T, pos0, adapter: adapter ?? undefined });
      traceRow(s.x, (T - 1) * rowBytes, i + 1);
      // Let the GPU start on the first layers while the rest is encoded.
      if (every > 0 && (i + 1) % every === 0 && i + 1 < this.layers.length) enc.submitSoFar();
    }

    let rows = T;
    let hidden = s.x;
    if (readout.kind !== 'all-logits') {
      // Only the last position's logits are wanted: skip lm_head for the others.
      enc.copy(s.x, (T - 1) * c.hidden_size * 4, s.last, 0, c.hidden_size * 4);
      rows = 1;
      hidden = s.last;
    }
    if (readout.kind !== 'none') {
      const normed = rows === 1 ? s.lastNormed : s.h;
      rmsNorm(enc, { x: hidden, weight: this.norm, y: normed, tokens: rows, dim: c.hidden_size, eps: c.rms_norm_eps });
      traceRow(normed, 0, this.layers.length + 1);
      matmul(enc, { x: normed, w: this.lm_head, y: s.logits, tokens: rows, plan: this.plan });
      if (readout.kind === 'argmax') argmax(enc, { logits: s.logits, n: c.vocab_size, rows: 1, out: s.topIds });
      if (readout.kind === 'topk') {
        if (readout.k < 1 || readout.k > MAX_TOPK) throw new RangeError(`top-k readout needs 1 <= k <= ${MAX_TOPK}`);
        topK(enc, { logits: s.logits, n: c.vocab_size, k: readout.k, outIds: s.topIds, outValues: s.topLogits });
        if (readout.logSumExp) logSumExp(enc, { logits: s.logits, n: c.vocab_size, rows: 1, out: s.logSumExp });
      }
    }
    enc.submit();
    this.cache.append(ids);

    switch (readout.kind) {
      case 'none':
        return {};
      case 'argmax':
        return { argmax: (await readU32(this.gpu, s.topIds, 1))[0]! };
      case 'topk':
        return {
          topk: {
            ids: await readU32(this.gpu, s.topIds, readout.k),
            logits: await readF32(this.gpu, s.topLogits, readout.k),
            ...(readout.logSumExp ? { logSumExp: (await readF32(this.gpu, s.logSumExp, 1))[0]! } : {}),
          },
        };
      case 'logits':
        return { logits: await readF32(this.gpu, s.logits, c.vocab_size) };
      case 'all-logits':
        return { logits: await readF32(this.gpu, s.logits, T * c.vocab_size) };
      case 'hidden-states':
        return { hiddenStates: await readF32(this.gpu, trace!, (this.layers.length + 2) * c.hidden_size) };
    }
  }

  /**
   * One decoder layer, as in the paper: pre-norm attention block, then pre-norm SwiGLU
   * MLP block. `step`: its rows (one sequence's chunk, or a batched step's rows), and the
   * LoRA adapter they run under, if any.
   */
  private layer(enc: Encoder, i: number, step: StepShape): void {
    const { tokens: T, pos0, rows, batch } = step;
    const A = step.adapter?.layers[i];
    const c = this.config;
    const s = this.scratch;
    const L = this.layers[i]!;
    // y += scale * (x lora_A^T) lora_B^T beside the projection key, if the adapter adapts it.
    const lora = (x: GPUBuffer, key: LinearKey, y: GPUBuffer) => {
      const m = A?.[key];
      if (m) loraUpdate(enc, { x, lora: m, y, u: this.loraScratch!.u, tokens: T });
    };
    const heads = c.num_attention_heads;
    const kvHeads = c.num_key_value_heads;
    const headDim = c.head_dim;
    const mm = { tokens: T, plan: this.plan, batch }; // a batched step: one kernel shape whatever its size

    // x = x + o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = rms_norm(x)
    const eps = c.rms_norm_eps;
    normQKV(enc, {
      x: s.x, norm: { weight: L.input_layernorm, eps }, h: s.h, writeH: !!(A?.q_proj || A?.k_proj || A?.v_proj),
      q_proj: L.q_proj, k_proj: L.k_proj, v_proj: L.v_proj, q: s.q, k: s.k, v: s.v, ...mm,
    });
    lora(s.h, 'q_proj', s.q);
    lora(s.h, 'k_proj', s.k);
    lora(s.h, 'v_proj', s.v);
    rope(enc, { q: s.q, k: s.k, table: this.ropeTable, tokens: T, heads, kvHeads, headDim, pos0, rows });
    const kv = { kNew: s.k, vNew: s.v, kCache: this.cache.keys[i]!, vCache: this.cache.values[i]!, kvHeads, headDim, slots: this.cache.slots };
    const shape = { q: s.q, out: s.attn, tokens: T, heads, window: c.sliding_window ?? 0 };
    if (rows && batch === 'decode') {
      // A batched decode step: each row attends as forward() decodes its sequence alone (past keys
      // from its region, its own from s.k), then the rows' keys go to their regions.
      decodeAttentionRows(enc, { ...kv, ...shape, rows, kvCache: this.cache.dtype });
      kvWriteRows(enc, { ...kv, rows, tokens: T, dtype: this.cache.dtype });
    } else if (rows) {
      // A batched prefill step: each row to its own sequence's region first, then every row reads its keys from there.
      kvWriteRows(enc, { ...kv, rows, tokens: T, dtype: this.cache.dtype });
      batchedAttention(enc, { ...kv, ...shape, rows, kvCache: this.cache.dtype });
    } else {
      attention(enc, { ...kv, ...shape, pos0, ...this.attentionPlan, prefill: this.plan.prefillAttention });
      kvWrite(enc, { ...kv, tokens: T, pos0, dtype: this.cache.dtype });
    }
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
      last: f32(sequences * c.hidden_size, 'last'), // one row per sequence in a batched step
      lastNormed: f32(sequences * c.hidden_size, 'last_normed'),
      topIds: f32(MAX_TOPK, 'top_ids'),
      topLogits: f32(MAX_TOPK, 'top_logits'),
      logSumExp: f32(1, 'log_sum_exp'),
      rows: createStorageBuffer(this.gpu, chunk * BATCH_ROW_BYTES, 'batch_rows'),
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
 * Refuses, before anything is allocated, a KV-cache pool whose layer buffers (every
 * sequence's region of one layer) would not fit one storage binding, naming the most
 * sequences that would.
 */
function checkPoolFits(gpu: Gpu, config: ModelConfig, contextLength: number, kvCache: KvCacheDtype, sequences: number): void {
  const limits = gpu.report.limits;
  const binding = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const region = KVCache.regionSlots(config, contextLength, STEP_PREFILL_TOKENS) * KVCache.slotBytes(config, kvCache);
  const most = Math.floor(binding / region);
  if (sequences > most) {
    throw new RangeError(
      `a KV cache for ${sequences} sequences needs ${sequences * region} bytes per layer, more than one storage binding of ${binding} bytes: ` +
        `at most ${most} sequences fit (lower the batch size, or the context length)`,
    );
  }
}

/**
 * Streams tensors from the checkpoint to the device through one bounded host
 * buffer, so loading never holds the model twice in memory (a 7B model is
 * 14.5 GB of 16-bit weights; on lavapipe the "device" memory is host memory too).
 */
class WeightLoader {
  private staging = new Uint8Array(STAGING_BYTES);
  private started = performance.now();
  private done = 0;
  private bytes = 0;
  private sinceSync = 0;
  private readonly total: number;
  private readonly totalBytes: number;

  constructor(
    private gpu: Gpu,
    private ckpt: Checkpoint,
    names: string[],
    private onProgress?: (p: LoadProgress) => void,
    /** Matrices the folder stores quantized (src/model/quantized.ts), and their formats. */
    private prequantized = new Map<string, QuantFormat>(),
  ) {
    this.total = names.length;
    this.totalBytes = names.reduce((sum, n) => sum + ckpt.get(n).byteLength, 0);
  }

  /**
   * A 2-D weight kept in its stored dtype (bf16 stays bf16: widened exactly in the kernels),
   * or quantized to `quantize` a staging buffer at a time.
   */
  async matrix(name: string, quantize?: QuantFormat): Promise<GpuMatrix> {
    const stored = this.prequantized.get(name);
    if (stored) return this.storedQuantizedMatrix(name, stored);
    if (quantize) return this.quantizedMatrix(name, quantize);
    const e = this.ckpt.float(name);
    const [rows, cols] = e.shape as [number, number];
    const m = allocateMatrix(this.gpu, rows, cols, e.dtype, name);
    const rowBytes = cols * bytesPerElement(e.dtype);
    await this.streamRows(name, m, (part, r, bytes) => writeBuffer(this.gpu, part.buffer, bytes, r * rowBytes));
    return m;
  }

  /** Rows widened to f32 and quantized on the host as they stream through (only one staging buffer's worth is ever held). */
  private async quantizedMatrix(name: string, format: QuantFormat): Promise<GpuMatrix> {
    const e = this.ckpt.float(name);
    const [rows, cols] = e.shape as [number, number];
    const L = quantLayout(format, cols);
    const m = allocateMatrix(this.gpu, rows, cols, format, name);
    await this.streamRows(name, m, (part, r, bytes, n) => {
      const q = quantizeRows(decodeToF32(bytes, e.dtype), n, cols, format, name, part.row0 + r);
      writeBuffer(this.gpu, part.buffer, q.codes, r * L.codeRowBytes);
      writeBuffer(this.gpu, part.buffer, q.scales, part.rows * L.codeRowBytes + r * L.scaleRowBytes);
    });
    return m;
  }

  /**
   * Reads float matrix `name` into the staging buffer a run of rows at a time, each checked finite,
   * and hands each run's bytes to `write` with the part of `m` it belongs to (r: its first row
   * within the part, n: its rows), which puts them on the device in the matrix's own format.
   */
  private async streamRows(
    name: string,
    m: GpuMatrix,
    write: (part: GpuMatrix['parts'][number], r: number, bytes: Uint8Array, n: number) => void,
  ): Promise<void> {
    const e = this.ckpt.float(name);
    const cols = e.shape[1]!;
    const rowBytes = cols * bytesPerElement(e.dtype);
    const rowsPerRead = Math.max(1, Math.floor(STAGING_BYTES / rowBytes));
    for (const part of m.parts) {
      for (let r = 0; r < part.rows; r += rowsPerRead) {
        const n = Math.min(rowsPerRead, part.rows - r);
        const bytes = this.ckpt.read(name, this.staging, (part.row0 + r) * rowBytes, n * rowBytes);
        checkFinite(bytes, e.dtype, e.file, name, (part.row0 + r) * cols);
        write(part, r, bytes, n);
        await this.throttle(bytes.byteLength);
      }
    }
    this.tick(e.byteLength);
  }

  /** A matrix a quantized folder stores as its two planes: each part's rows copied as they are. */
  private async storedQuantizedMatrix(name: string, format: QuantFormat): Promise<GpuMatrix> {
    const e = this.ckpt.get(name);
    const rows = e.shape[0]!;
    const cols = format === 'q8' ? e.shape[1]! : e.shape[1]! * 2; // one byte per weight, or two weights per byte
    const L = quantLayout(format, cols);
    const scales = scalesName(name);
    const m = allocateMatrix(this.gpu, rows, cols, format, name);
    const rowsPerRead = Math.max(1, Math.floor(STAGING_BYTES / L.codeRowBytes));
    for (const part of m.parts) {
      for (let r = 0; r < part.rows; r += rowsPerRead) {
        const n = Math.min(rowsPerRead, part.rows - r);
        writeBuffer(this.gpu, part.buffer, this.ckpt.read(name, this.staging, (part.row0 + r) * L.codeRowBytes, n * L.codeRowBytes), r * L.codeRowBytes);
        const s = this.ckpt.read(scales, this.staging, (part.row0 + r) * L.scaleRowBytes, n * L.scaleRowBytes);
        checkFinite(s, 'f16', this.ckpt.get(scales).file, scales, (part.row0 + r) * L.scalesPerRow);
        writeBuffer(this.gpu, part.buffer, s, part.rows * L.codeRowBytes + r * L.scaleRowBytes);
        await this.throttle(n * L.rowBytes);
      }
    }
    this.tick(e.byteLength);
    return m;
  }

  /** A norm weight, widened to f32 on the host (it is tiny). */
  vector(name: string): GPUBuffer {
    const e = this.ckpt.float(name);
    if (e.shape.length !== 1) throw new CheckpointError(`${e.file}: '${name}' should be a vector`);
    const raw = this.ckpt.read(name);
    checkFinite(raw, e.dtype, e.file, name);
    const values = decodeToF32(raw, e.dtype);
    const buffer = createStorageBuffer(this.gpu, values.byteLength, name);
    writeBuffer(this.gpu, buffer, values);
    this.tick(e.byteLength);
    return buffer;
  }

  /** Lets Dawn recycle its upload memory now and then, so host memory stays bounded. */
  private async throttle(bytes: number): Promise<void> {
    this.sinceSync += bytes;
    if (this.sinceSync >= 256 * 2 ** 20) {
      this.sinceSync = 0;
      await this.gpu.device.queue.onSubmittedWorkDone();
    }
  }

  private tick(bytes: number): void {
    this.done++;
    this.bytes += bytes;
    this.onProgress?.({
      tensorsDone: this.done,
      tensorsTotal: this.total,
      bytesDone: this.bytes,
      bytesTotal: this.totalBytes,
      seconds: (performance.now() - this.started) / 1000,
    });
  }
}
