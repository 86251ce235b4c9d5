/**
 * The generation core the endpoints share: a GenerationJob (requests.ts) in, a JSON or SSE reply out.
 *
 * `Generations.reply` takes a job through what follows parsing, the same for every API: the
 * prompt (refused from its length alone if it cannot fit, else tokenized in a worker thread
 * while other requests run), admission to the bounded queue (503 when full),
 * Generator.generateChoices (which serializes generations FIFO), and the answer: one JSON body,
 * or server-sent events as the text arrives. What the answer looks like is the endpoint's
 * ReplyFormat (routes/); `HeldText` is the part of streaming they have in common, holding back
 * text that may turn out to be a tool call.
 */
import type { ServerResponse } from 'node:http';
import { ContextLengthError, type FinishReason, type Generator, type Timings, type TokenLogprobs, type Usage } from '../generator.ts';
import { ApiError } from './errors.ts';
import { Cancelled, type Exchange, type RequestRecord } from './exchange.ts';
import { sendJson, SseWriter } from './http.ts';
import type { GenerationJob } from './requests.ts';
import { parseToolCalls, type ToolCall, type ToolPlan } from './structured.ts';

/** Seconds a client is told to wait (Retry-After) when the queue is full. */
export const RETRY_AFTER_SECONDS = 1;

export interface ChoiceResult {
  text: string;
  finishReason: FinishReason;
  usage: Usage;
  seed: number;
  /** With logprobs: every token's (all of them; `tailLogprobs` those no text event carried). */
  logprobs: TokenLogprobs[];
  tailLogprobs: TokenLogprobs[];
}

/** Callbacks a streaming reply hooks into, per choice. */
export interface ChoiceHooks {
  onStart?(index: number): void;
  onText?(index: number, text: string, logprobs: TokenLogprobs[]): void;
  onDone?(index: number, result: ChoiceResult): void;
}

/** A streamed answer: events per choice, then `end`, what follows the last choice (before [DONE]). */
export interface StreamHooks extends ChoiceHooks {
  end(results: ChoiceResult[], usage: Usage): void;
}

/** How one endpoint writes its answer; `Generations.reply` drives it, streamed or not. */
export interface ReplyFormat {
  /** The body of a non-streamed answer. */
  json(results: ChoiceResult[], usage: Usage): object;
  /** A streamed answer's events, sent on `sse` (open by then). */
  stream(sse: SseWriter): StreamHooks;
}

/**
 * What the server's metrics (metrics.ts) hear of each generation. Times are performance.now()
 * milliseconds: `arrivedAt` when the request arrived, `submittedAt` when it was admitted to the
 * queue. Nothing an observer does changes an answer.
 */
/** What an observer hears of one finished choice. */
export interface ChoiceRecord {
  arrivedAt: number;
  submittedAt: number;
  adapter: string | undefined;
  first: boolean;
  finishReason: FinishReason;
  usage: Usage;
  timings: Timings;
}

export interface GenerationObserver {
  /** A choice ended (`first`: the request's first to end); `usage` and `timings` are its own. */
  choiceDone(choice: ChoiceRecord): void;
  /** The whole answer was sent. */
  requestDone(arrivedAt: number, adapter: string | undefined): void;
}

/** The server's generations: their limits (tokenizing, the queue) and the way from a job to its reply. */
export class Generations {
  /** Requests admitted for generation: those running (up to the generator's maxBatch) plus those waiting. */
  private admitted = 0;
  /** Requests whose prompts are being tokenized (bounded like the queue: a flood waits in neither). */
  private tokenizing = 0;
  /** Generations in progress (running or queued), so the server's close() can wait for the model to be free. */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly generator: Generator,
    /** Requests that may wait beyond the generator's maxBatch before the answer is 503. */
    private readonly maxQueue: number,
    private readonly observer?: GenerationObserver,
  ) {}

  /** Requests admitted (running + queued). */
  get active(): number {
    return this.admitted;
  }

  /** Settles when every generation in progress has ended. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  /**
   * Generates the job's answer and writes it on `ex`'s response in `format`. `format` is made
   * once the request is admitted: OpenAI's `created` is that moment, after any tokenizing.
   */
  async reply(job: GenerationJob, ex: Exchange, format: () => ReplyFormat): Promise<void> {
    const { res, record, signal } = ex;
    const promptIds = await this.promptIds(job, record, signal);
    const release = this.admit(res);
    try {
      const writer = format();
      if (!job.stream) {
        const results = await this.runChoices(job, promptIds, ex, {});
        sendJson(res, 200, writer.json(results, usage(promptIds, results)));
        this.observer?.requestDone(ex.arrivedAt, job.options.adapter);
        return;
      }
      const sse = new SseWriter(res);
      sse.open();
      const hooks = writer.stream(sse);
      const results = await this.runChoices(job, promptIds, ex, hooks);
      hooks.end(results, usage(promptIds, results));
      sse.end();
      this.observer?.requestDone(ex.arrivedAt, job.options.adapter);
    } finally {
      release();
    }
  }

  /**
   * The job's prompt ids, if it fits the context: a prompt whose length alone shows it cannot
   * fit is refused before tokenizing; otherwise it is tokenized in the tokenizer's worker
   * thread, slice by slice, while the event loop serves other requests (/health included).
   * 400 context_length_exceeded otherwise.
   */
  private async promptIds(job: GenerationJob, record: RequestRecord, signal: AbortSignal): Promise<number[]> {
    if (this.tokenizing >= 1 + this.maxQueue) throw busy(`${this.tokenizing} requests are already being tokenized (the limit is ${1 + this.maxQueue})`);
    this.tokenizing++;
    try {
      const ids = await this.generator.prompts.fitAsync(job.prompt, job.params.max_tokens, signal);
      record.promptTokens = ids.length;
      return ids;
    } catch (err) {
      if (err instanceof ContextLengthError) {
        // OpenAI's wording: some clients look for "maximum context length" to trim and retry.
        const n = `${err.atLeast ? 'at least ' : ''}${err.promptTokens}`;
        const asked =
          err.maxTokens === null
            ? `However, your messages resulted in ${n} tokens. Please reduce the length of the messages.`
            : `However, you requested ${err.atLeast ? 'at least ' : ''}${err.promptTokens + err.maxTokens} tokens (${n} in the messages, ` +
              `${err.maxTokens} in the completion). Please reduce the length of the messages or completion.`;
        throw new ApiError(400, `This model's maximum context length is ${err.contextLength} tokens. ${asked}`,
          'invalid_request_error', err.maxTokens === null ? 'messages' : 'max_tokens', 'context_length_exceeded');
      }
      throw err;
    } finally {
      this.tokenizing--;
    }
  }

  /**
   * Takes a queue slot; returns the slot's release (idempotent). Throws 503 when maxBatch
   * requests run and maxQueue more wait, before any GPU work.
   */
  private admit(res: ServerResponse): () => void {
    const batch = this.generator.maxBatch;
    if (this.admitted >= batch + this.maxQueue) {
      throw busy(`${batch} requests are running and ${this.admitted - batch} are already waiting (the limit is ${this.maxQueue})`);
    }
    this.admitted++;
    let held = true;
    const release = () => {
      if (held) {
        held = false;
        this.admitted--;
      }
    };
    // A client that leaves frees its slot now, not when the generator gets round to noticing.
    res.once('close', release);
    return release;
  }

  /** Runs the job's n choices (Generator.generateChoices); throws Cancelled if the client left. */
  private async runChoices(job: GenerationJob, promptIds: number[], ex: Exchange, hooks: ChoiceHooks): Promise<ChoiceResult[]> {
    const { record, signal } = ex;
    const submittedAt = performance.now();
    let first = true;
    const work = (async () => {
      const results: ChoiceResult[] = [];
      let text = '';
      let logprobs: TokenLogprobs[] = [];
      try {
        for await (const ev of this.generator.generateChoices(promptIds, job.params, signal, job.options)) {
          if (ev.type === 'start') {
            text = '';
            logprobs = [];
            hooks.onStart?.(ev.index);
            continue;
          }
          if (ev.logprobs) logprobs.push(...ev.logprobs);
          if (ev.type === 'text') {
            text += ev.text;
            hooks.onText?.(ev.index, ev.text, ev.logprobs ?? []);
          } else {
            record.completionTokens += ev.usage.completion_tokens;
            if (first) record.cachedTokens = ev.timings.reusedTokens;
            this.observer?.choiceDone({
              arrivedAt: ex.arrivedAt,
              submittedAt,
              adapter: job.options.adapter,
              first,
              finishReason: ev.finishReason,
              usage: ev.usage,
              timings: ev.timings,
            });
            first = false;
            if (ev.finishReason === 'cancelled') break;
            const result: ChoiceResult = {
              text,
              finishReason: ev.finishReason,
              usage: ev.usage,
              seed: ev.seed,
              logprobs,
              tailLogprobs: ev.logprobs ?? [],
            };
            record.finishReasons.push(result.finishReason);
            results.push(result);
            hooks.onDone?.(ev.index, result);
          }
        }
      } catch (err) {
        // Aborted while waiting in the generator's queue.
        if (signal.aborted) throw new Cancelled('cancelled');
        throw err;
      }
      if (results.length < job.params.n || signal.aborted) throw new Cancelled('cancelled');
      return results;
    })();
    this.inFlight.add(work);
    try {
      return await work;
    } finally {
      this.inFlight.delete(work);
    }
  }
}

/** 503 server_busy with Retry-After, saying why. */
function busy(why: string): ApiError {
  return new ApiError(
    503,
    `The server is busy: ${why}. Retry shortly.`,
    'server_error',
    null,
    'server_busy',
    { 'Retry-After': String(RETRY_AFTER_SECONDS) },
  );
}

function usage(promptIds: number[], results: ChoiceResult[]): Usage {
  // As OpenAI counts n > 1: the prompt once, every choice's completion.
  const completion = results.reduce((sum, r) => sum + r.usage.completion_tokens, 0);
  return { prompt_tokens: promptIds.length, completion_tokens: completion, total_tokens: promptIds.length + completion };
}

/**
 * One streamed choice's text on its way to `send`. With tools on offer the answer may be a call,
 * which is sent whole once complete: the text is held until its first visible character says
 * which (`{`: a call). Without tools it passes straight through.
 */
export class HeldText {
  private mode: 'text' | 'call' | 'undecided';
  private text = '';
  private readonly tokens: TokenLogprobs[] = [];

  constructor(
    private readonly tools: ToolPlan | null,
    private readonly send: (text: string, tokens: TokenLogprobs[]) => void,
  ) {
    this.mode = tools ? 'undecided' : 'text';
  }

  /** A piece of the choice's text, with its tokens' log-probabilities. */
  push(text: string, tokens: TokenLogprobs[]): void {
    if (this.mode === 'text') return this.send(text, tokens);
    this.text += text;
    this.tokens.push(...tokens);
    if (this.mode === 'undecided' && this.text.trim()) {
      this.mode = this.text.trimStart().startsWith('{') ? 'call' : 'text';
      if (this.mode === 'text') this.send(this.text, this.tokens);
    }
  }

  /**
   * The choice `r` is done: the calls it made, with the held tokens' log-probabilities, for the
   * caller to send; or null, once any text still held has gone to `send`.
   */
  end(r: ChoiceResult): { calls: ToolCall[]; tokens: TokenLogprobs[] } | null {
    const calls = this.mode !== 'text' && this.tools ? parseToolCalls(r.text, this.tools) : null;
    if (calls) return { calls, tokens: this.tokens };
    if (this.mode !== 'text' && this.text) this.send(this.text, this.tokens);
    return null;
  }
}
