/**
 * The one API that the CLI and the HTTP server share: load a model folder once,
 * then turn prompts into streams of text. Data flows one way through it:
 * tokenizer -> model (forward pass, KV cache) -> sampling -> text.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getGpu, type Gpu } from './gpu/device.ts';
import type { QuantFormat } from './gpu/buffers.ts';
import { MistralModel, poolCapacity, type ForwardResult, type LoadProgress, type StepReadout, type StepSequence } from './model/model.ts';
import type { BatchShape } from './kernels/matmul/index.ts';
import { KVCache } from './model/kv_cache.ts';
import { contextLengthFor, loadConfig, type ModelConfig } from './model/config.ts';
import type { KvCacheDtype } from './kernels/kv_cache.ts';
import { loadLora, type DeviceLora } from './model/lora.ts';
import type { ModelSource } from './util/files.ts';
import { OpenChatTokenizer, SLICE_CHARS, type ChatMessage } from './tokenizer/index.ts';
import type { Steps } from './tokenizer/steps.ts';
import { Sampler } from './sampling/sampler.ts';
import { StopMatcher } from './sampling/stop.ts';
import { resolveSeed, sampleSeed, type SamplingParams } from './sampling/params.ts';
import { GrammarCache, TokenVocabulary, UnsupportedVocabularyError, type ConstraintFactory, type JsonGrammar, type TokenConstraint } from './sampling/json/grammar.ts';
import { stepLogprobs, type TokenLogprob } from './sampling/logprobs.ts';

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
  if (!existsSync(dir)) throw new Error(`model folder not found: ${dir} (from ${from})`);
  if (!statSync(dir).isDirectory()) throw new Error(`${from} must name a folder; ${dir} is a file`);
  return dir;
}

export interface GeneratorOptions {
  /** A Hugging Face model folder; defaults to $OPENCHAT_MODEL, then the bundled tiny model. */
  modelDir?: string;
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

export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface Timings {
  promptTokens: number;
  /** Prompt tokens whose keys and values were still in the cache from the previous request. */
  reusedTokens: number;
  /** Seconds from the start of the request until the first token was chosen. */
  timeToFirstToken: number;
  prefillTokensPerSecond: number;
  decodeTokens: number;
  decodeSeconds: number;
  decodeTokensPerSecond: number;
}

/** What a generation may do beyond sampling (all optional). */
export interface GenerateOptions {
  /** Constrained decoding (JSON mode, tool calls): a fresh constraint is started per generation. */
  constraint?: ConstraintFactory;
  /** Report each token's log-probability and the `top` (0-20) most likely alternatives (on text and done events). */
  logprobs?: { top: number };
  /** The LoRA adapter to run under, by the name it was loaded with (GeneratorOptions.lora); none: the base model. */
  adapter?: string;
}

/** One generated token's log-probability and the most likely alternatives at its step. */
export interface TokenLogprobs {
  id: number;
  logprob: number;
  top: TokenLogprob[];
}

/**
 * With `logprobs`, a text event carries the tokens generated since the previous text event (the
 * text may complete several, or none when a stop string held it back); `done` carries those whose
 * text never came out. The end-of-turn token is never listed.
 */
export type GenerationEvent =
  | { type: 'text'; text: string; logprobs?: TokenLogprobs[] }
  | { type: 'done'; finishReason: FinishReason; usage: Usage; tokens: number[]; seed: number; timings: Timings; logprobs?: TokenLogprobs[] };

/** An event of `generateChoices`: which choice it belongs to, and when each starts (with its seed). */
export type ChoiceEvent = ({ type: 'start'; seed: number } | GenerationEvent) & { index: number };

/** A prompt before tokenization: a chat (in the model's chat format) or raw text (BOS + text). */
export type PromptSpec =
  | { kind: 'chat'; messages: ChatMessage[]; condition?: string }
  | { kind: 'raw'; text: string };

export class ContextLengthError extends RangeError {
  constructor(
    readonly promptTokens: number,
    readonly maxTokens: number | null,
    readonly contextLength: number,
    /** True when promptTokens is a lower bound (the prompt was refused before it was tokenized). */
    readonly atLeast = false,
  ) {
    const tokens = atLeast ? `at least ${promptTokens} tokens` : `${promptTokens} tokens`;
    super(
      maxTokens === null
        ? `the prompt has ${tokens}, but the context holds ${contextLength}: shorten the prompt`
        : `the prompt (${tokens}) plus max_tokens (${maxTokens}) is ${atLeast ? 'at least ' : ''}${promptTokens + maxTokens} tokens, ` +
            `more than the context length ${contextLength}: shorten the prompt or lower max_tokens`,
    );
    this.name = 'ContextLengthError';
  }
}

/**
 * Prompt building and the context check, from the tokenizer and config.json
 * alone (no GPU, no weights): a CLI can refuse a prompt that does not fit
 * before spending half a minute loading a 7B model.
 */
export class Prompts {
  /** JSON-mode grammars by schema, and every token's bytes: built on first use. */
  private grammars: GrammarCache | undefined;
  private bytesTable: (Uint8Array | null)[] | undefined;

  private constructor(
    readonly tokenizer: OpenChatTokenizer,
    readonly contextLength: number,
  ) {}

  static async load(modelDir: string, contextLength?: number, files?: ModelSource): Promise<Prompts> {
    const config = loadConfig(modelDir, files);
    const tokenizer = await OpenChatTokenizer.load(modelDir, files);
    if (tokenizer.vocabSize > config.vocab_size) {
      throw new Error(
        `${modelDir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}; ` +
          'they belong to different models',
      );
    }
    return new Prompts(tokenizer, contextLengthFor(config, contextLength));
  }

  /** A chat as OpenChat's server builds it: role prefixes and end-of-turn as special tokens, content as plain text. */
  encodeChat(messages: ChatMessage[], condition?: string): number[] {
    return this.tokenizer.encodeChat(messages, { condition, addGenerationPrompt: true });
  }

  /** Raw text, no template: BOS then the text (special-token strings are plain text). */
  encodeRaw(text: string): number[] {
    return this.tokenizer.encode(text, { addBos: true });
  }

  /**
   * A JSON-mode grammar over this vocabulary (schema null: any JSON object), compiled once per
   * schema and cached. Throws SchemaError naming a keyword it does not support.
   */
  jsonGrammar(schema: unknown | null): JsonGrammar {
    if (!this.grammars) {
      let vocab: TokenVocabulary | undefined;
      this.grammars = new GrammarCache(() => (vocab ??= new TokenVocabulary(this.tokenBytes())), this.tokenizer.stopIds);
    }
    return this.grammars.get(schema);
  }

  /**
   * Each token's text as UTF-8 bytes (null for special tokens), built once: see
   * OpenChatTokenizer.tokenBytes. Throws UnsupportedVocabularyError for a vocabulary that is not
   * SentencePiece's (JSON mode cannot know what its tokens write).
   */
  tokenBytes(): (Uint8Array | null)[] {
    if (!this.tokenizer.sentencePieceDecoder) {
      throw new UnsupportedVocabularyError(`JSON mode and tools need a SentencePiece vocabulary ("\u2581" spaces, <0xNN> bytes); ${this.tokenizer.source} is not one`);
    }
    return (this.bytesTable ??= this.tokenizer.tokenBytes());
  }

  /** A token's text as UTF-8 bytes for display (log-probabilities); a special token's is its name. */
  tokenDisplayBytes(id: number): Uint8Array {
    const encoder = new TextEncoder();
    if (!this.tokenizer.sentencePieceDecoder) return encoder.encode(this.tokenizer.decode([id])); // the decoder's own text
    return this.tokenBytes()[id] ?? encoder.encode(this.tokenizer.idToToken(id) ?? '');
  }

  /** Throws ContextLengthError unless prompt + max_tokens fits the context. */
  checkContext(promptTokens: number, maxTokens: number | null, atLeast = false): void {
    if (promptTokens >= this.contextLength || (maxTokens !== null && promptTokens + maxTokens > this.contextLength)) {
      throw new ContextLengthError(promptTokens, maxTokens, this.contextLength, atLeast);
    }
  }

  /**
   * The prompt's ids, if it fits the context with `maxTokens`; otherwise ContextLengthError.
   * A long prompt (over SLICE_CHARS characters) whose length alone shows that it cannot fit
   * (OpenChatTokenizer.minChatTokens) is refused before it is tokenized, so an oversized
   * prompt costs nothing.
   */
  fit(spec: PromptSpec, maxTokens: number | null): number[] {
    return this.tokenizer.finish(this.fitSteps(spec, maxTokens));
  }

  /** `fit`, tokenizing in a worker thread so the event loop goes on (the server), until `signal` aborts. */
  fitAsync(spec: PromptSpec, maxTokens: number | null, signal?: AbortSignal): Promise<number[]> {
    return this.tokenizer.finishAsync(this.fitSteps(spec, maxTokens), signal);
  }

  private *fitSteps(spec: PromptSpec, maxTokens: number | null): Steps<number[]> {
    // A short prompt costs less to tokenize than a refusal that can only say "at least N tokens".
    const chars = spec.kind === 'chat' ? spec.messages.reduce((sum, m) => sum + m.content.length, 0) : spec.text.length;
    if (chars > SLICE_CHARS) {
      const bound =
        spec.kind === 'chat' ? this.tokenizer.minChatTokens(spec.messages) : this.tokenizer.minTokens(spec.text, { addBos: true });
      this.checkContext(bound, maxTokens, true);
    }
    const ids =
      spec.kind === 'chat'
        ? yield* this.tokenizer.encodeChatSteps(spec.messages, { condition: spec.condition, addGenerationPrompt: true })
        : yield* this.tokenizer.encodeSteps(spec.text, { addBos: true });
    this.checkContext(ids.length, maxTokens);
    return ids;
  }
}

/**
 * One sequence being generated: its prompt, sampling state and output, stepped by the
 * Generator's scheduler one readout at a time. Events go to its consumer through `events`.
 */
class Sequence {
  readonly sampler: Sampler;
  readonly constraint: TokenConstraint | undefined;
  readonly readout: StepReadout;
  readonly decoder: ReturnType<OpenChatTokenizer['createStreamDecoder']>;
  readonly stops: StopMatcher;
  readonly limit: number;
  readonly events = new Channel<GenerationEvent>();
  /** The region of the KV-cache pool it runs in, once admitted. */
  region = -1;
  reused = 0;
  /** Tokens still to run through the model (the prompt's rest, or the last token chosen). */
  pending: number[] = [];
  /** A choice of n > 1 that waits for its group's prompt to be copied to its region. */
  follower = false;
  /** The request it belongs to (the n choices of one request share it). */
  group: object = this;
  readonly generated: number[] = [];
  done = false;
  cancelled = false;
  private admittedAt = 0;
  private firstTokenAt = 0;
  private tokenLogprobs: TokenLogprobs[] = [];

  constructor(
    readonly promptIds: number[],
    readonly params: SamplingParams,
    readonly seed: number,
    readonly options: GenerateOptions,
    /** The LoRA adapter it runs under (undefined: the base model). */
    readonly adapter: DeviceLora | undefined,
    tokenizer: OpenChatTokenizer,
    vocab: number,
    contextLength: number,
    private readonly stopIds: Set<number>,
  ) {
    this.sampler = new Sampler(params, vocab, seed);
    this.constraint = options.constraint?.start();
    // A constraint masks the whole row, so it reads the row. Log-probabilities otherwise ride on
    // the top-k readout (plus the row's log-sum-exp, on the device) when the candidates decide.
    const lpTop = options.logprobs?.top;
    this.readout =
      this.constraint || this.sampler.needsFullLogits
        ? { kind: 'logits' }
        : lpTop !== undefined
          ? { kind: 'topk', k: Math.min(Math.max(this.sampler.greedy ? 1 : params.top_k, lpTop, 1), vocab), logSumExp: true }
          : this.sampler.greedy
            ? { kind: 'argmax' }
            : { kind: 'topk', k: Math.min(params.top_k, vocab) };
    this.decoder = tokenizer.createStreamDecoder({ skipSpecial: true });
    this.stops = new StopMatcher(params.stop);
    this.limit = Math.min(params.max_tokens ?? Infinity, contextLength - promptIds.length);
  }

  /** Takes region `region`, keeping the `reused` tokens of the prompt it already holds. */
  admit(region: number, reused: number): void {
    this.admittedAt = performance.now();
    this.region = region;
    this.reused = reused;
    this.pending = this.promptIds.slice(reused);
  }

  /** True while the prompt runs (before the first token is chosen). */
  get prefilling(): boolean {
    return this.generated.length === 0;
  }

  /** Chooses the next token from its step's readout; emits text; may finish. */
  consume(out: ForwardResult): void {
    const lpTop = this.options.logprobs?.top;
    let token: number;
    if (out.argmax !== undefined) token = out.argmax;
    else if (out.topk) {
      const { ids, logits, logSumExp } = out.topk;
      token = this.sampler.sampleFromCandidates(ids, logits);
      if (lpTop !== undefined && !this.stopIds.has(token)) {
        // The chosen token is always among the candidates (they are what it was drawn from).
        const top = Array.from(ids.subarray(0, lpTop), (id, i) => ({ id, logprob: logits[i]! - logSumExp! }));
        this.tokenLogprobs.push({ id: token, logprob: logits[ids.indexOf(token)]! - logSumExp!, top });
      }
    } else {
      const row = out.logits!;
      // Log-probabilities are the model's own (before penalties and the mask change the row).
      const lp = this.options.logprobs ? stepLogprobs(row, this.options.logprobs.top) : null;
      const raw = lp ? row.slice() : null;
      const allowed = this.constraint?.allowed(this.limit - this.generated.length) ?? undefined;
      token = this.sampler.sample(row, { prompt: this.promptIds, generated: this.generated }, allowed);
      this.constraint?.accept(token);
      if (lp && !this.stopIds.has(token)) this.tokenLogprobs.push({ id: token, logprob: raw![token]! - lp.logSumExp, top: lp.top });
    }
    if (this.generated.length === 0) this.firstTokenAt = performance.now();
    this.generated.push(token);
    this.pending = [token];

    if (this.stopIds.has(token)) return this.finish('stop');
    const { emit, stopped } = this.stops.push(this.decoder.push(token));
    if (emit) this.events.push({ type: 'text', text: emit, ...this.withLogprobs() });
    if (stopped) return this.finish('stop', true);
    if (this.generated.length >= this.limit) this.finish('length');
  }

  /** Ends the sequence: flushes held-back text, sends `done`. */
  finish(finishReason: FinishReason, stoppedByString = false): void {
    if (this.done) return;
    this.done = true;
    if (!stoppedByString) {
      // Release what the decoder and the stop matcher held back for a continuation that never came.
      const { emit, stopped } = this.stops.push(this.decoder.flush());
      const tail = emit + (stopped ? '' : this.stops.flush());
      if (tail) this.events.push({ type: 'text', text: tail, ...this.withLogprobs() });
    }
    const ended = performance.now();
    const generated = this.generated;
    const prompt = this.promptIds.length;
    const decodeTokens = Math.max(0, generated.length - 1);
    const decodeSeconds = generated.length ? (ended - this.firstTokenAt) / 1000 : 0;
    const prefillSeconds = ((this.firstTokenAt || ended) - (this.admittedAt || ended)) / 1000;
    const prefilled = prompt - this.reused;
    this.events.push({
      type: 'done',
      ...this.withLogprobs(),
      finishReason,
      tokens: generated,
      seed: this.seed,
      usage: { prompt_tokens: prompt, completion_tokens: generated.length, total_tokens: prompt + generated.length },
      timings: {
        promptTokens: prompt,
        reusedTokens: this.reused,
        timeToFirstToken: prefillSeconds,
        prefillTokensPerSecond: prefillSeconds > 0 ? prefilled / prefillSeconds : 0,
        decodeTokens,
        decodeSeconds,
        decodeTokensPerSecond: decodeSeconds > 0 ? decodeTokens / decodeSeconds : 0,
      },
    });
    this.events.close();
  }

  private withLogprobs(): { logprobs?: TokenLogprobs[] } {
    if (!this.options.logprobs) return {};
    const logprobs = this.tokenLogprobs;
    this.tokenLogprobs = [];
    return { logprobs };
  }
}

/** A queue of values from the scheduler to one consumer (an async iterator), ended by close(). */
class Channel<T> {
  private items: T[] = [];
  private wake: (() => void) | undefined;
  private closed = false;
  private error: unknown;

  push(item: T): void {
    this.items.push(item);
    this.wake?.();
  }

  close(error?: unknown): void {
    this.closed = true;
    this.error = error;
    this.wake?.();
  }

  async *drain(): AsyncGenerator<T> {
    for (;;) {
      if (this.items.length > 0) {
        yield this.items.shift()!;
        continue;
      }
      if (this.closed) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}

/**
 * A request's sequences: one, or the n choices of one prompt, admitted together (n regions)
 * so the prompt runs once and its keys are copied to every choice's region.
 */
interface Group {
  members: Sequence[];
  signal?: AbortSignal;
  /** Leaves the waiting queue (abort while waiting). */
  onAbort?: () => void;
}

/**
 * The one API the CLI and the server share. Generations run through a scheduler (continuous
 * batching): decode steps run one token of every decoding sequence, and prefill steps, taking
 * turns with them, chunks of the prompts still prefilling (the plan's prefillChunk rows in all),
 * so a long prompt never freezes the streams already running. Sequences join and leave between steps; each holds a
 * region of the KV-cache pool while it runs (MistralModel.sequences of them); requests beyond
 * that wait in FIFO order. A sequence's tokens do not depend on what else runs beside it
 * (MistralModel.step), so the same request and seed give the same text alone and under load.
 */
export class Generator {
  private readonly stopIds: Set<number>;
  private readonly adapters = new Map<string, DeviceLora>();
  /** Requests waiting for regions, in arrival order. */
  private readonly waiting: Group[] = [];
  /** Sequences holding a region, in admission order. */
  private active: Sequence[] = [];
  /** Regions not held, least recently used first. */
  private free: number[];
  private looping = false;
  /** The kind of the last step, so that decode and prefill steps alternate while both have work. */
  private lastKind: BatchShape = 'prefill';
  /** Where the next decode step starts among the decoding sequences (round robin past maxChunk of them). */
  private decodeCursor = 0;
  /** Which adapter's sequences the next step serves (round robin over the adapters in use). */
  private adapterTurn = 0;

  private constructor(
    readonly gpu: Gpu,
    readonly model: MistralModel,
    readonly prompts: Prompts,
    readonly modelDir: string,
  ) {
    this.stopIds = new Set([...prompts.tokenizer.stopIds, ...model.config.eos_token_id]);
    this.free = Array.from({ length: model.sequences }, (_, i) => i);
  }

  static async load(opts: GeneratorOptions = {}): Promise<Generator> {
    const modelDir = opts.files && opts.modelDir ? opts.modelDir : resolveModelDir(opts.modelDir, 'modelDir');
    const gpu = opts.gpu ?? (await getGpu());
    const prompts = await Prompts.load(modelDir, opts.contextLength, opts.files);
    // Adapters are checked against config.json before the (possibly long) weight load.
    const config = loadConfig(modelDir, opts.files);
    const lora = (opts.lora ?? []).map(({ name, dir }, i, all) => {
      if (!/^\S+$/.test(name)) throw new Error(`a LoRA adapter's name must be non-empty, without spaces; got ${JSON.stringify(name)}`);
      if (all.findIndex((a) => a.name === name) !== i) throw new Error(`two LoRA adapters are named ${JSON.stringify(name)}`);
      return loadLora(dir, config, name);
    });
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

  /** The name clients see (OpenAI `model` field): the folder's name. */
  get modelName(): string {
    return basename(this.modelDir);
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
    return this.waiting.length;
  }

  /** Requests being generated (holding regions). */
  get running(): number {
    return new Set(this.active.map((s) => s.group)).size;
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

  jsonGrammar(schema: unknown | null): JsonGrammar {
    return this.prompts.jsonGrammar(schema);
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
      this.submit({ members, signal });
      try {
        for (const [i, member] of members.entries()) {
          yield { type: 'start', index: first + i, seed: member.seed };
          for await (const event of member.events.drain()) {
            yield { ...event, index: first + i };
            if (event.type === 'done' && event.finishReason === 'cancelled') return;
          }
        }
      } finally {
        for (const m of members) this.cancel(m);
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
    this.submit({ members: [seq], signal });
    try {
      yield* seq.events.drain();
    } finally {
      // A consumer that stops listening frees the sequence's region at the next step.
      this.cancel(seq);
    }
  }

  /** A new sequence; an unknown adapter is an UnknownAdapterError here, before it queues. */
  private sequence(promptIds: number[], params: SamplingParams, options: GenerateOptions): Sequence {
    const vocab = this.model.config.vocab_size;
    const adapter = this.adapter(options.adapter);
    return new Sequence(promptIds, params, resolveSeed(params), options, adapter, this.tokenizer, vocab, this.contextLength, this.stopIds);
  }

  /** Queues a request; an abort while it waits takes it out of the queue at once. */
  private submit(group: Group): void {
    const { signal } = group;
    if (signal?.aborted) {
      for (const m of group.members) m.events.close(signal.reason ?? new Error('aborted'));
      return;
    }
    if (signal) {
      group.onAbort = () => {
        const i = this.waiting.indexOf(group);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          for (const m of group.members) m.events.close(signal.reason ?? new Error('aborted'));
        } else {
          for (const m of group.members) m.cancelled = true;
          this.wake();
        }
      };
      signal.addEventListener('abort', group.onAbort, { once: true });
    }
    this.waiting.push(group);
    this.wake();
  }

  private cancel(seq: Sequence): void {
    if (seq.done) return;
    seq.cancelled = true;
    this.wake();
  }

  /** Starts the step loop unless it runs. */
  private wake(): void {
    if (this.looping) return;
    this.looping = true;
    this.loop().catch((err: unknown) => {
      this.looping = false;
      this.failAll(err);
    });
  }

  /** Steps the model while anything runs or waits: admit, build a step, run it, hand out the readouts. */
  private async loop(): Promise<void> {
    // Let the caller that woke the loop finish its synchronous part (e.g. start iterating).
    await Promise.resolve();
    for (;;) {
      this.retire();
      this.admit();
      const { kind, adapter, batch } = this.buildStep();
      if (batch.length === 0) {
        if (this.active.length === 0 && this.waiting.length === 0) {
          // Cleared here, in the same task as the check: a request submitted after it starts a new loop.
          this.looping = false;
          return;
        }
        throw new Error('scheduler: sequences run but none has a row to step'); // retire() leaves no follower without a leader
      }
      let results: ForwardResult[];
      try {
        results = await this.model.step(
          batch.map((b) => b.step),
          kind,
          adapter,
        );
      } catch (err) {
        // The step's rows are lost: fail its sequences, forget their regions' contents.
        for (const { seq } of batch) {
          this.model.rewindSequence(seq.region, 0);
          seq.done = true;
          seq.events.close(err);
        }
        continue;
      }
      batch.forEach(({ seq }, j) => {
        const out = results[j]!;
        if (seq.done || !('argmax' in out || out.topk || out.logits)) return;
        const followers = this.active.filter((f) => f.follower && f.group === seq.group && !f.done);
        for (const f of followers) {
          // n choices: the prompt ran once; copy its keys and hand each choice its own copy of the readout.
          this.model.copySequence(seq.region, f.region);
          f.follower = false;
          f.reused = seq.reused;
          consume(f, cloneResult(out));
        }
        consume(seq, out);
      });
    }
  }

  /** An error of the scheduler itself: every request gets it (nothing may hang or crash the server). */
  private failAll(err: unknown): void {
    for (const seq of [...this.active, ...this.waiting.flatMap((g) => g.members)]) {
      if (seq.region >= 0) this.model.rewindSequence(seq.region, 0);
      seq.done = true;
      seq.events.close(err);
    }
    this.active = [];
    this.waiting.length = 0;
    this.free = Array.from({ length: this.model.sequences }, (_, i) => i);
  }

  /** Frees the regions of sequences that finished or were cancelled. */
  private retire(): void {
    const keep: Sequence[] = [];
    for (const seq of this.active) {
      if (seq.cancelled && !seq.done) seq.finish('cancelled');
      if (seq.done) this.free.push(seq.region);
      else keep.push(seq);
    }
    this.active = keep;
    // Followers whose leader left before its prompt ran (cancelled, failed) run the prompt themselves.
    for (const f of keep) {
      if (!f.follower || keep.some((o) => o.group === f.group && !o.follower)) continue;
      f.follower = false;
      this.model.rewindSequence(f.region, 0);
      f.admit(f.region, 0);
    }
  }

  /** Admits waiting requests, in order, while regions are free. */
  private admit(): void {
    while (this.waiting.length > 0 && this.free.length >= this.waiting[0]!.members.length) {
      const group = this.waiting.shift()!;
      if (group.signal && group.onAbort) {
        // From here an abort cancels the running sequences.
        group.signal.removeEventListener('abort', group.onAbort);
        const members = group.members;
        group.signal.addEventListener('abort', () => {
          for (const m of members) m.cancelled = true;
          this.wake();
        }, { once: true });
      }
      for (const m of group.members) m.group = group;
      const [leader, ...followers] = group.members;
      // The leader takes the region that already holds most of its prompt (a chat's earlier turns).
      let best = 0;
      let bestReuse = -1;
      this.free.forEach((region, i) => {
        const reuse = this.model.reusablePrefixOf(region, leader!.promptIds, leader!.adapter);
        if (reuse > bestReuse) {
          best = i;
          bestReuse = reuse;
        }
      });
      const region = this.free.splice(best, 1)[0]!;
      this.model.rewindSequence(region, bestReuse);
      leader!.admit(region, bestReuse);
      this.active.push(leader!);
      for (const f of followers) {
        f.admit(this.free.shift()!, 0);
        f.follower = true;
        f.pending = [];
        this.active.push(f);
      }
    }
  }

  /**
   * The next step, decode or prefill (alternating while both have work, so a long prompt and
   * the running streams take turns): a decode step runs one token of every decoding sequence (of
   * up to maxChunk, round robin beyond that); a prefill step runs prompt chunks of those still
   * prefilling, in admission order, up to maxChunk rows in all. A step runs
   * under one LoRA adapter (or none): with sequences under several, steps take turns among them.
   */
  private buildStep(): { kind: BatchShape; adapter: DeviceLora | undefined; batch: { seq: Sequence; step: StepSequence }[] } {
    const ready = this.active.filter((seq) => !seq.done && !seq.follower);
    const adapters = [...new Set(ready.map((seq) => seq.adapter))];
    const adapter = adapters[this.adapterTurn++ % Math.max(1, adapters.length)];
    const runnable = ready.filter((seq) => seq.adapter === adapter);
    const decoding = runnable.filter((seq) => !seq.prefilling);
    const prefilling = runnable.filter((seq) => seq.prefilling);
    const kind: BatchShape = decoding.length === 0 || (prefilling.length > 0 && this.lastKind === 'decode') ? 'prefill' : 'decode';
    this.lastKind = kind;
    const batch: { seq: Sequence; step: StepSequence }[] = [];
    if (kind === 'decode') {
      const n = Math.min(decoding.length, this.model.maxChunk);
      const first = this.decodeCursor % decoding.length;
      for (let i = 0; i < n; i++) {
        const seq = decoding[(first + i) % decoding.length]!;
        batch.push({ seq, step: { seq: seq.region, ids: seq.pending, readout: seq.readout } });
      }
      this.decodeCursor = first + n;
      return { kind, adapter, batch };
    }
    let budget = this.model.maxChunk;
    for (const seq of prefilling) {
      if (budget <= 0) break;
      const n = Math.min(seq.pending.length, budget);
      const ids = seq.pending.slice(0, n);
      seq.pending = seq.pending.slice(n);
      budget -= n;
      // Only the prompt's last chunk reads anything back: its last row gives the first token.
      batch.push({ seq, step: { seq: seq.region, ids, readout: seq.pending.length === 0 ? seq.readout : { kind: 'none' } } });
    }
    return { kind, adapter, batch };
  }

  /** Frees the model's device memory (and stops the tokenizer's worker thread). */
  close(): void {
    this.model.destroy();
    this.tokenizer.close();
  }
}

/** Hands a sequence its readout; an error there (sampling, a constraint) ends that sequence alone. */
function consume(seq: Sequence, out: ForwardResult): void {
  try {
    seq.consume(out);
  } catch (err) {
    seq.done = true;
    seq.events.close(err);
  }
}

/** A readout's own copy (sampling may change the logits row in place). */
function cloneResult(r: ForwardResult): ForwardResult {
  return {
    ...(r.argmax !== undefined ? { argmax: r.argmax } : {}),
    ...(r.topk ? { topk: { ids: r.topk.ids.slice(), logits: r.topk.logits.slice(), ...(r.topk.logSumExp !== undefined ? { logSumExp: r.topk.logSumExp } : {}) } } : {}),
    ...(r.logits ? { logits: r.logits.slice() } : {}),
  };
}
