/**
 * One generation's state (Sequence: the ids still to run, the sampler, stop strings, timings) and
 * what it tells its consumer (GenerationEvent, through a Channel): all of a request that does not
 * depend on what runs beside it. The scheduler (scheduler.ts) decides when it steps.
 */
import type { ForwardResult, StepReadout } from './model/model.ts';
import type { DeviceLora } from './model/lora.ts';
import type { OpenChatTokenizer } from './tokenizer/index.ts';
import { Sampler } from './sampling/sampler.ts';
import { StopMatcher } from './sampling/stop.ts';
import type { SamplingParams } from './sampling/params.ts';
import type { ConstraintFactory, TokenConstraint } from './sampling/grammar/constraint.ts';
import { stepLogprobs, type TokenLogprob } from './sampling/logprobs.ts';

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

/**
 * One sequence being generated: its prompt, sampling state and output, stepped by the
 * Scheduler one readout at a time. Events go to its consumer through `events`.
 */
export class Sequence {
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
export class Channel<T> {
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
