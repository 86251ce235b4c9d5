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
import { MistralModel, type LoadProgress, type Readout } from './model/model.ts';
import { contextLengthFor, loadConfig } from './model/config.ts';
import { loadLora, type DeviceLora } from './model/lora.ts';
import type { ModelSource } from './util/files.ts';
import { OpenChatTokenizer, SLICE_CHARS, type ChatMessage } from './tokenizer/index.ts';
import type { Steps } from './tokenizer/steps.ts';
import { Sampler } from './sampling/sampler.ts';
import { StopMatcher } from './sampling/stop.ts';
import { resolveSeed, sampleSeed, type SamplingParams } from './sampling/params.ts';
import { GrammarCache, TokenVocabulary, UnsupportedVocabularyError, type ConstraintFactory, type JsonGrammar } from './sampling/json/grammar.ts';
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
 * A FIFO lock: one generation at a time owns the model and its KV cache. A
 * waiter whose signal aborts leaves the queue at once.
 */
class Mutex {
  private locked = false;
  private waiters: Array<{ grant: () => void }> = [];

  get queued(): number {
    return this.waiters.length;
  }

  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
    const release = () => {
      const next = this.waiters.shift();
      if (next) next.grant();
      else this.locked = false;
    };
    if (!this.locked) {
      this.locked = true;
      return Promise.resolve(release);
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      const onAbort = () => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(signal!.reason ?? new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
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

export class Generator {
  private readonly lock = new Mutex();
  private readonly stopIds: Set<number>;
  private readonly adapters = new Map<string, DeviceLora>();

  private constructor(
    readonly gpu: Gpu,
    readonly model: MistralModel,
    readonly prompts: Prompts,
    readonly modelDir: string,
  ) {
    this.stopIds = new Set([...prompts.tokenizer.stopIds, ...model.config.eos_token_id]);
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
    const model = await MistralModel.load(gpu, modelDir, opts);
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

  /** Generations waiting for the model. */
  get queued(): number {
    return this.lock.queued;
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
   * The request's `n` samples, one after another (each waits its turn for the model, as
   * `generate` does). The one seeding rule: a request without a seed draws one, and choice i
   * runs with sampleSeed(seed, i) = seed + i, so choice 0 is what the seed gives alone and every
   * choice replays on its own. Each choice starts with a 'start' event carrying its seed. Stops
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
    for (let index = 0; index < params.n; index++) {
      if (signal?.aborted) return;
      const choice = { ...params, seed: sampleSeed(seed, index), n: 1 };
      yield { type: 'start', index, seed: choice.seed };
      for await (const event of this.generate(promptIds, choice, signal, options)) {
        yield { ...event, index };
        if (event.type === 'done' && event.finishReason === 'cancelled') return;
      }
    }
  }

  /**
   * Generates one sample. Yields text as it becomes final (never half a UTF-8
   * character, never the beginning of a stop string), then one `done` event.
   * Generation ends at an end-of-turn/EOS token or a stop string ('stop'), at
   * max_tokens or the end of the context ('length'), or when `signal` aborts
   * ('cancelled'). Requests queue in order for the model.
   */
  async *generate(
    promptIds: number[],
    params: SamplingParams,
    signal?: AbortSignal,
    options: GenerateOptions = {},
  ): AsyncGenerator<GenerationEvent> {
    this.checkContext(promptIds.length, params.max_tokens);
    const adapter = this.adapter(options.adapter);
    const release = await this.lock.acquire(signal);
    try {
      yield* this.run(promptIds, params, signal, options, adapter);
    } finally {
      release();
    }
  }

  private async *run(
    promptIds: number[],
    params: SamplingParams,
    signal: AbortSignal | undefined,
    options: GenerateOptions,
    adapter: DeviceLora | undefined,
  ): AsyncGenerator<GenerationEvent> {
    const started = performance.now();
    const seed = resolveSeed(params);
    const sampler = new Sampler(params, this.model.config.vocab_size, seed);
    const constraint = options.constraint?.start();
    const vocab = this.model.config.vocab_size;
    // A constraint masks the whole row, so it reads the row. Log-probabilities otherwise ride on
    // the top-k readout (plus the row's log-sum-exp, on the device) when the candidates decide.
    const lpTop = options.logprobs?.top;
    const readout: Readout =
      constraint || sampler.needsFullLogits
        ? { kind: 'logits' }
        : lpTop !== undefined
          ? { kind: 'topk', k: Math.min(Math.max(sampler.greedy ? 1 : params.top_k, lpTop, 1), vocab), logSumExp: true }
          : sampler.greedy
            ? { kind: 'argmax' }
            : { kind: 'topk', k: Math.min(params.top_k, vocab) };
    const decoder = this.tokenizer.createStreamDecoder({ skipSpecial: true });
    const stops = new StopMatcher(params.stop);
    const limit = Math.min(params.max_tokens ?? Infinity, this.contextLength - promptIds.length);

    // Keep what the cache already holds of this prompt (a chat's earlier turns), if it was computed under this adapter.
    const reused = this.model.reusablePrefix(promptIds, adapter);
    this.model.rewind(reused);
    let pending = promptIds.slice(reused);

    const generated: number[] = [];
    let finishReason: FinishReason = 'length';
    let stoppedByString = false;
    let firstTokenAt = 0;
    // Log-probabilities of tokens not yet reported (they go out with the next text).
    let tokenLogprobs: TokenLogprobs[] = [];
    const withLogprobs = () => {
      if (!options.logprobs) return {};
      const logprobs = tokenLogprobs;
      tokenLogprobs = [];
      return { logprobs };
    };
    while (generated.length < limit) {
      if (signal?.aborted) {
        finishReason = 'cancelled';
        break;
      }
      const out = await this.model.forward(pending, readout, adapter);
      let token: number;
      if (out.argmax !== undefined) token = out.argmax;
      else if (out.topk) {
        const { ids, logits, logSumExp } = out.topk;
        token = sampler.sampleFromCandidates(ids, logits);
        if (lpTop !== undefined && !this.stopIds.has(token)) {
          // The chosen token is always among the candidates (they are what it was drawn from).
          const top = Array.from(ids.subarray(0, lpTop), (id, i) => ({ id, logprob: logits[i]! - logSumExp! }));
          tokenLogprobs.push({ id: token, logprob: logits[ids.indexOf(token)]! - logSumExp!, top });
        }
      } else {
        const row = out.logits!;
        // Log-probabilities are the model's own (before penalties and the mask change the row).
        const lp = options.logprobs ? stepLogprobs(row, options.logprobs.top) : null;
        const raw = lp ? row.slice() : null;
        token = sampler.sample(row, { prompt: promptIds, generated }, constraint?.allowed(limit - generated.length) ?? undefined);
        constraint?.accept(token);
        if (lp && !this.stopIds.has(token)) tokenLogprobs.push({ id: token, logprob: raw![token]! - lp.logSumExp, top: lp.top });
      }
      if (generated.length === 0) firstTokenAt = performance.now();
      generated.push(token);
      pending = [token];

      if (this.stopIds.has(token)) {
        finishReason = 'stop';
        break;
      }
      const { emit, stopped } = stops.push(decoder.push(token));
      if (emit) yield { type: 'text', text: emit, ...withLogprobs() };
      if (stopped) {
        finishReason = 'stop';
        stoppedByString = true;
        break;
      }
    }
    if (!stoppedByString) {
      // Release what the decoder and the stop matcher held back for a continuation that never came.
      const { emit, stopped } = stops.push(decoder.flush());
      const tail = emit + (stopped ? '' : stops.flush());
      if (tail) yield { type: 'text', text: tail, ...withLogprobs() };
    }

    const ended = performance.now();
    const decodeTokens = Math.max(0, generated.length - 1);
    const decodeSeconds = generated.length ? (ended - firstTokenAt) / 1000 : 0;
    const prefillSeconds = ((firstTokenAt || ended) - started) / 1000;
    const prefilled = promptIds.length - reused;
    yield {
      type: 'done',
      ...withLogprobs(),
      finishReason,
      tokens: generated,
      seed,
      usage: { prompt_tokens: promptIds.length, completion_tokens: generated.length, total_tokens: promptIds.length + generated.length },
      timings: {
        promptTokens: promptIds.length,
        reusedTokens: reused,
        timeToFirstToken: prefillSeconds,
        prefillTokensPerSecond: prefillSeconds > 0 ? prefilled / prefillSeconds : 0,
        decodeTokens,
        decodeSeconds,
        decodeTokensPerSecond: decodeSeconds > 0 ? decodeTokens / decodeSeconds : 0,
      },
    };
  }

  /** Frees the model's device memory (and stops the tokenizer's worker thread). */
  close(): void {
    this.model.destroy();
    this.tokenizer.close();
  }
}
