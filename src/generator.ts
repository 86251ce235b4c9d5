/**
 * The one API that the CLI, the HTTP server and the engine in a browser tab share: load a model
 * folder once, then turn prompts into streams of text. Data flows one way through it:
 * tokenizer (prompts.ts) -> model (forward pass, KV cache; stepped by scheduler.ts) ->
 * sampling (sequence.ts) -> text. Loading also decides how many sequences run together (batchSize).
 */
import { existsSync, statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getGpu, type Gpu } from './gpu/device.ts';
import type { QuantFormat } from './gpu/buffers.ts';
import { MistralModel, poolCapacity, type LoadProgress } from './model/model.ts';
import { KVCache } from './model/kv_cache.ts';
import { loadConfig, type ModelConfig } from './model/config.ts';
import { isGgufPath } from './model/gguf_model.ts';
import type { KvCacheDtype } from './kernels/kv_cache.ts';
import { loadLora, type DeviceLora, type LoraWeights } from './model/lora.ts';
import type { ModelSource } from './util/files.ts';
import type { ChatMessage, OpenChatTokenizer } from './tokenizer/index.ts';
import { resolveSeed, sampleSeed, type SamplingParams } from './sampling/params.ts';
import type { GrammarConstraint } from './sampling/grammar/constraint.ts';
import type { GrammarSpec } from './sampling/grammar/specs.ts';
import { Prompts, type GrammarCompilerLike } from './prompts.ts';
import { Scheduler } from './scheduler.ts';
import { Sequence, type GenerateOptions, type GenerationEvent } from './sequence.ts';

// The API's types and errors, importable from here whichever file defines them.
export { ContextLengthError, Prompts, type PromptSpec } from './prompts.ts';
export type { FinishReason, GenerateOptions, GenerationEvent, Timings, TokenLogprobs, Usage } from './sequence.ts';

/** The tiny random-weight checkpoint shipped in golden/: the default when no model is named. */
export const BUNDLED_MODEL_DIR = fileURLToPath(new URL('../golden/tiny-mistral/', import.meta.url));

/**
 * The model folder to load: `given` (a --model flag, a `modelDir` option), else $OPENCHAT_MODEL,
 * else the bundled tiny model; an empty string counts as not given. A folder that does not exist,
 * or a file, is an error naming where the path came from (`source`), before any GPU work.
 */
export function resolveModelDir(given: string | undefined, source = '--model'): string {
  const fromFlag = given !== undefined && given !== '';
  const path = fromFlag ? given : process.env.OPENCHAT_MODEL;
  if (path === undefined || path === '') return BUNDLED_MODEL_DIR;
  const dir = resolve(path);
  const from = fromFlag ? source : 'OPENCHAT_MODEL';
  if (isGgufPath(dir)) {
    if (!existsSync(dir)) throw new Error(`GGUF file not found: ${dir} (from ${from})`);
    if (!statSync(dir).isFile()) throw new Error(`${from}: ${dir} is named like a GGUF file but is not a file`);
    return dir;
  }
  if (!existsSync(dir)) throw new Error(`model folder not found: ${dir} (from ${from})`);
  if (!statSync(dir).isDirectory()) throw new Error(`${from} must name a Hugging Face model folder or a .gguf file; ${dir} is neither`);
  return dir;
}

/** The name a model path is served under: a folder's name, a GGUF file's without its extension. */
export function modelNameOf(path: string): string {
  return basename(path).replace(/\.gguf$/i, '');
}

export interface GeneratorOptions {
  /** A Hugging Face model folder or a GGUF file; defaults to $OPENCHAT_MODEL, then the bundled tiny model. */
  modelDir?: string;
  /** Over the model's sliding_window (ModelOptions.slidingWindow). */
  slidingWindow?: number | null;
  contextLength?: number;
  maxChunk?: number;
  /** Quantize the weights while loading (ModelOptions.quantize). */
  quantize?: QuantFormat;
  onProgress?: (p: LoadProgress) => void;
  /** Most sequences decoded together (continuous batching); default DEFAULT_MAX_BATCH. */
  maxBatch?: number;
  /** Device memory the KV cache may take, in GiB (default DEFAULT_KV_CACHE_GB): fewer sequences when they would not fit. */
  kvCacheGb?: number;
  /** KV cache storage (ModelOptions.plan.kvCache). */
  kvCache?: KvCacheDtype;
  /** LoRA adapters (PEFT folders) to load beside the base model; each request picks one by name, or none. */
  lora?: { name: string; dir: string }[];
  /** Where the folder's files are read from (default: the disk); with it, `modelDir` is taken as given. */
  files?: ModelSource;
  /** Host memory the weights stream through while loading (ModelOptions.stagingBytes). */
  stagingBytes?: number;
  /** The device to run on (default: Dawn's, getGpu()); a browser tab passes its own (src/web/engine.ts). */
  gpu?: Gpu;
}

/** A request named an adapter that was not loaded. */
export class UnknownAdapterError extends Error {
  constructor(readonly adapter: string, readonly loaded: readonly string[]) {
    super(
      `no LoRA adapter named ${JSON.stringify(adapter.slice(0, 80))} is loaded; ` +
        (loaded.length ? `loaded: ${loaded.join(', ')}` : 'none is loaded (load one with --lora)'),
    );
    this.name = 'UnknownAdapterError';
  }
}

/**
 * Sequences decoded together unless told otherwise (fewer when the KV-cache budget or one storage
 * binding per layer holds fewer): a decode step takes every decoding sequence, so up to this
 * many rows share one read of the weights (bench/RESULTS.md, "One pass").
 */
export const DEFAULT_MAX_BATCH = 32;
/** KV-cache memory unless told otherwise, GiB: 3 sequences of a 7B model's 4k window (f32), 32 of a 1b model's 2k context. */
export const DEFAULT_KV_CACHE_GB = 4;

/**
 * How many sequences the KV-cache pool holds: `maxBatch`, fewer if `kvCacheGb` cannot hold
 * them or a layer's keys would not fit one storage binding (`bindingMost`, poolCapacity), and at
 * least one (a budget too small even for one is an error that says what one needs). `chunk`:
 * the most rows a step adds to one sequence (the plan's prefillChunk), which each region holds
 * beyond the window.
 */
export function batchSize(
  config: ModelConfig,
  contextLength: number,
  opts: { maxBatch?: number; kvCacheGb?: number; kvCache?: KvCacheDtype; chunk: number; bindingMost?: number },
): number {
  const maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`max batch must be a positive integer, got ${maxBatch}`);
  const gb = opts.kvCacheGb ?? DEFAULT_KV_CACHE_GB;
  if (!(gb > 0)) throw new RangeError(`the KV-cache budget must be a positive number of GiB, got ${gb}`);
  const region = KVCache.regionBytes(config, contextLength, opts.chunk, opts.kvCache ?? 'f32');
  const fit = Math.floor((gb * 2 ** 30) / region);
  if (fit < 1) {
    throw new RangeError(
      `a KV-cache budget of ${gb} GiB holds no sequence: one needs ${(region / 2 ** 30).toFixed(3)} GiB at a context of ${contextLength} tokens ` +
        '(raise the budget, or lower the context length)',
    );
  }
  return Math.max(1, Math.min(maxBatch, fit, opts.bindingMost ?? Infinity));
}

/** An event of `generateChoices`: which choice it belongs to, and when each starts (with its seed). */
export type ChoiceEvent = ({ type: 'start'; seed: number } | GenerationEvent) & { index: number };

/**
 * The one API the CLI, the server and the tab share. Every generation runs through one Scheduler
 * (continuous batching, scheduler.ts): sequences join and leave between steps, each in a region
 * of the KV-cache pool (MistralModel.sequences of them), and requests beyond that wait in FIFO
 * order. A sequence's tokens do not depend on what runs beside it, so the same request and seed
 * give the same text alone and under load.
 */
export class Generator {
  private readonly stopIds: Set<number>;
  private readonly adapters = new Map<string, DeviceLora>();
  private readonly scheduler: Scheduler;

  private constructor(
    readonly gpu: Gpu,
    readonly model: MistralModel,
    readonly prompts: Prompts,
    readonly modelDir: string,
  ) {
    this.stopIds = new Set([...prompts.tokenizer.stopIds, ...model.config.eos_token_id]);
    this.scheduler = new Scheduler(model);
  }

  static async load(opts: GeneratorOptions = {}): Promise<Generator> {
    const modelDir = opts.files && opts.modelDir ? opts.modelDir : resolveModelDir(opts.modelDir, 'modelDir');
    const gpu = opts.gpu ?? (await getGpu());
    const prompts = await Prompts.load(modelDir, opts.contextLength, opts.files);
    // Adapters are checked against config.json before the (possibly long) weight load.
    const config = await loadConfig(modelDir, opts.files, { slidingWindow: opts.slidingWindow });
    const lora: LoraWeights[] = [];
    for (const [i, { name, dir }] of (opts.lora ?? []).entries()) {
      if (!/^\S+$/.test(name)) throw new Error(`a LoRA adapter's name must be non-empty, without spaces; got ${JSON.stringify(name)}`);
      if (opts.lora!.findIndex((a) => a.name === name) !== i) throw new Error(`two LoRA adapters are named ${JSON.stringify(name)}`);
      lora.push(await loadLora(dir, config, name));
    }
    const forced = opts.kvCache ? { kvCache: opts.kvCache } : undefined;
    const plan = MistralModel.planFor(gpu, config, prompts.contextLength, { plan: forced, maxChunk: opts.maxChunk });
    const bindingMost = poolCapacity(gpu, config, prompts.contextLength, plan);
    const sequences = batchSize(config, prompts.contextLength, { ...opts, kvCache: plan.kvCache, chunk: plan.prefillChunk, bindingMost });
    const model = await MistralModel.load(gpu, modelDir, { ...opts, sequences, plan: forced });
    const generator = new Generator(gpu, model, prompts, modelDir);
    for (const w of lora) generator.adapters.set(w.name, model.addAdapter(w));
    return generator;
  }

  /** The LoRA adapters loaded, by name, in load order. */
  get adapterNames(): string[] {
    return [...this.adapters.keys()];
  }

  /** The adapter `name` (undefined: none, the base model); UnknownAdapterError if it was not loaded. */
  private adapter(name: string | undefined): DeviceLora | undefined {
    if (name === undefined) return undefined;
    const a = this.adapters.get(name);
    if (!a) throw new UnknownAdapterError(name, this.adapterNames);
    return a;
  }

  /** True for the bundled random-weight model, whose output is noise. */
  get isBundledModel(): boolean {
    return resolve(this.modelDir) === resolve(BUNDLED_MODEL_DIR);
  }

  /** The name clients see (OpenAI `model` field): the folder's name, or the GGUF file's without `.gguf`. */
  get modelName(): string {
    return modelNameOf(this.modelDir);
  }

  get contextLength(): number {
    return this.model.contextLength;
  }

  /** Most sequences decoded together: the KV-cache pool's regions. */
  get maxBatch(): number {
    return this.model.sequences;
  }

  /** Requests waiting for the model (for KV-cache regions). */
  get queued(): number {
    return this.scheduler.queued;
  }

  /** Requests being generated (holding regions). */
  get running(): number {
    return this.scheduler.running;
  }

  /** KV-cache regions in use, of maxBatch (the server's metrics). */
  get regionsInUse(): number {
    return this.scheduler.regionsHeld;
  }

  get tokenizer(): OpenChatTokenizer {
    return this.prompts.tokenizer;
  }

  encodeChat(messages: ChatMessage[], condition?: string): number[] {
    return this.prompts.encodeChat(messages, condition);
  }

  encodeRaw(text: string): number[] {
    return this.prompts.encodeRaw(text);
  }

  checkContext(promptTokens: number, maxTokens: number | null): void {
    this.prompts.checkContext(promptTokens, maxTokens);
  }

  grammar(spec: GrammarSpec): Promise<GrammarConstraint> {
    return this.prompts.grammar(spec);
  }

  /** See Prompts.compileGrammarsWith: the server compiles in a worker thread. */
  compileGrammarsWith(compiler: GrammarCompilerLike | undefined): void {
    this.prompts.compileGrammarsWith(compiler);
  }

  tokenBytes(): (Uint8Array | null)[] {
    return this.prompts.tokenBytes();
  }

  tokenDisplayBytes(id: number): Uint8Array {
    return this.prompts.tokenDisplayBytes(id);
  }

  /**
   * The request's `n` samples. The one seeding rule: a request without a seed draws one, and
   * choice i runs with sampleSeed(seed, i) = seed + i, so choice 0 is what the seed gives alone
   * and every choice replays on its own. The choices are decoded together (their prompt run
   * once, its keys copied to each choice's region; in rounds when the pool holds fewer than n)
   * but reported one after another: each starts with a 'start' event carrying its seed. Stops
   * after a choice that was cancelled (the signal aborted).
   */
  async *generateChoices(
    promptIds: number[],
    params: SamplingParams,
    signal?: AbortSignal,
    options: GenerateOptions = {},
  ): AsyncGenerator<ChoiceEvent> {
    this.adapter(options.adapter); // an unknown adapter fails before the first choice starts
    const seed = resolveSeed(params);
    if (params.n === 1) {
      yield { type: 'start', index: 0, seed };
      for await (const event of this.generate(promptIds, { ...params, seed, n: 1 }, signal, options)) yield { ...event, index: 0 };
      return;
    }
    this.checkContext(promptIds.length, params.max_tokens);
    for (let first = 0; first < params.n; first += this.maxBatch) {
      const members: Sequence[] = [];
      for (let index = first; index < Math.min(params.n, first + this.maxBatch); index++) {
        members.push(this.sequence(promptIds, { ...params, seed: sampleSeed(seed, index), n: 1 }, options));
      }
      this.scheduler.submit(members, signal);
      try {
        for (const [i, member] of members.entries()) {
          yield { type: 'start', index: first + i, seed: member.seed };
          for await (const event of member.events.drain()) {
            yield { ...event, index: first + i };
            if (event.type === 'done' && event.finishReason === 'cancelled') return;
          }
        }
      } finally {
        for (const m of members) this.scheduler.cancel(m);
      }
    }
  }

  /**
   * Generates one sample. Yields text as it becomes final (never half a UTF-8
   * character, never the beginning of a stop string), then one `done` event.
   * Generation ends at an end-of-turn/EOS token or a stop string ('stop'), at
   * max_tokens or the end of the context ('length'), or when `signal` aborts
   * ('cancelled'; while still waiting for the model, the abort's reason is thrown).
   */
  async *generate(
    promptIds: number[],
    params: SamplingParams,
    signal?: AbortSignal,
    options: GenerateOptions = {},
  ): AsyncGenerator<GenerationEvent> {
    this.checkContext(promptIds.length, params.max_tokens);
    const seq = this.sequence(promptIds, params, options);
    this.scheduler.submit([seq], signal);
    try {
      yield* seq.events.drain();
    } finally {
      // A consumer that stops listening frees the sequence's region at the next step.
      this.scheduler.cancel(seq);
    }
  }

  /** A new sequence; an unknown adapter is an UnknownAdapterError here, before it queues. */
  private sequence(promptIds: number[], params: SamplingParams, options: GenerateOptions): Sequence {
    const vocab = this.model.config.vocab_size;
    const adapter = this.adapter(options.adapter);
    return new Sequence(promptIds, params, resolveSeed(params), options, adapter, this.tokenizer, vocab, this.contextLength, this.stopIds);
  }

  /** Frees the model's device memory (and stops the tokenizer's worker thread). */
  close(): void {
    this.model.destroy();
    this.tokenizer.close();
  }
}
