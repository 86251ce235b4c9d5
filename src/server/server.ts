/**
 * `openchat serve`: an OpenAI-compatible HTTP server (plus Cloudflare Workers
 * AI's text-generation schema) over one loaded Generator, on node:http alone.
 *
 * The life of a request:
 *   auth (before the body is read) -> body (size-limited) -> JSON -> route ->
 *   parse + validate into a GenerationJob (requests.ts; no GPU work yet) ->
 *   context check -> admission to the bounded queue (503 when full) ->
 *   Generator.generate, which serializes generations FIFO -> JSON or SSE reply.
 * The client leaving (the response's 'close' before it finished) aborts the
 * request's signal: a queued generation never starts, a running one stops after
 * the current token, and its queue slot is freed at once.
 *
 * Every error a request can cause is answered as JSON (errors.ts); anything
 * unexpected is a 500 with a generic body, and its details go to the log only.
 * The log has one line per request (method, path, status, tokens, latency),
 * never prompt text or API keys.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ContextLengthError, Generator, type FinishReason, type Usage } from '../generator.ts';
import type { SamplingParams } from '../sampling/params.ts';
import {
  ApiError,
  cloudflareErrorBody,
  internalError,
  openAiErrorBody,
} from './errors.ts';
import { parseJsonObject, readBody, sendJson, SseWriter } from './http.ts';
import { ModelNames } from './models.ts';
import {
  parseChatRequest,
  parseCompletionRequest,
  parseWorkersAiRequest,
  type GenerationJob,
} from './requests.ts';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 18888;
/** Largest request body accepted (413 above): 1 MiB holds any prompt that fits an 8K context many times over. */
export const DEFAULT_MAX_BODY_BYTES = 1 << 20;
/** Requests that may wait behind the running one before the server answers 503. */
export const DEFAULT_MAX_QUEUE = 32;
/** Seconds a client is told to wait (Retry-After) when the queue is full. */
export const RETRY_AFTER_SECONDS = 1;

export interface ServerOptions {
  /** An already loaded model. The caller keeps it: close() leaves it loaded. */
  generator?: Generator;
  /** Otherwise a model folder to load (default: $OPENCHAT_MODEL, then the bundled tiny model). */
  modelDir?: string;
  contextLength?: number;
  host?: string;
  /** 0 picks a free port (tests). */
  port?: number;
  /** With keys, every request except GET /health needs `Authorization: Bearer <key>`. */
  apiKeys?: string[];
  maxBodyBytes?: number;
  maxQueue?: number;
  /** Write one line per request. Default true. */
  logRequests?: boolean;
  /** Where log lines go (request lines and unexpected errors). Default: stderr. */
  log?: (line: string) => void;
  /** More model names to accept, beyond the folder name and the OpenChat aliases (models.ts). */
  modelAliases?: string[];
  /** LoRA adapters to load with the model (when the server loads it), each also a model name. */
  lora?: { name: string; dir: string }[];
}

export interface RunningServer {
  /** e.g. "http://127.0.0.1:18888" */
  url: string;
  port: number;
  generator: Generator;
  server: OpenChatServer;
  /** Stops listening, cancels what is running or queued, and frees the model if the server loaded it. */
  close(): Promise<void>;
}

/** Loads the model (unless one is given) and starts listening. */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const ownsGenerator = options.generator === undefined;
  const generator =
    options.generator ?? (await Generator.load({ modelDir: options.modelDir, contextLength: options.contextLength, lora: options.lora }));
  const server = new OpenChatServer(generator, options);
  try {
    const port = await server.listen(options.port ?? DEFAULT_PORT, options.host ?? DEFAULT_HOST);
    const host = options.host ?? DEFAULT_HOST;
    const shownHost = host.includes(':') ? `[${host}]` : host;
    return {
      url: `http://${shownHost}:${port}`,
      port,
      generator,
      server,
      close: async () => {
        await server.close();
        if (ownsGenerator) generator.close();
      },
    };
  } catch (err) {
    if (ownsGenerator) generator.close();
    throw err;
  }
}

/** What one request did, for its log line. */
interface RequestRecord {
  promptTokens: number;
  completionTokens: number;
  finishReasons: FinishReason[];
  errorCode: string | null;
}

interface ChoiceResult {
  text: string;
  finishReason: FinishReason;
  usage: Usage;
  seed: number;
}

/** Callbacks a streaming reply hooks into, per choice. */
interface ChoiceHooks {
  onStart?(index: number): void;
  onText?(index: number, text: string): void;
  onDone?(index: number, result: ChoiceResult): void;
}

/** The request was cancelled (the client left); nothing more is sent. */
class Cancelled extends Error {}

export class OpenChatServer {
  readonly names: ModelNames;
  private readonly http: Server;
  private readonly maxBodyBytes: number;
  private readonly maxQueue: number;
  private readonly keyDigests: Buffer[];
  private readonly log: (line: string) => void;
  private readonly logRequests: boolean;
  /** Requests admitted for generation: the running one plus those waiting. */
  private admitted = 0;
  /** Generations in progress (running or queued), so close() can wait for the model to be free. */
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(
    readonly generator: Generator,
    options: ServerOptions = {},
  ) {
    this.names = new ModelNames(generator.modelName, options.modelAliases, generator.adapterNames);
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.maxQueue = options.maxQueue ?? DEFAULT_MAX_QUEUE;
    this.keyDigests = (options.apiKeys ?? []).map(digest);
    this.log = options.log ?? ((line) => process.stderr.write(line + '\n'));
    this.logRequests = options.logRequests ?? true;
    this.http = createServer((req, res) => void this.handle(req, res));
  }

  /** Resolves with the port it listens on. */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        resolve((this.http.address() as AddressInfo).port);
      });
    });
  }

  /** Requests admitted (running + queued). */
  get active(): number {
    return this.admitted;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    // Dropping the connections fires every response's 'close', which aborts its generation.
    this.http.closeAllConnections();
    await closed;
    await Promise.allSettled([...this.inFlight]);
  }

  // -------------------------------------------------------------------------
  // One request

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const method = req.method ?? 'GET';
    const path = normalizePath((req.url ?? '/').split('?')[0] ?? '/');
    const workersAi = path.startsWith('/ai/');
    const record: RequestRecord = { promptTokens: 0, completionTokens: 0, finishReasons: [], errorCode: null };
    const abort = new AbortController();

    // The log line waits for both the response to close and the handler to return, so that a
    // cancelled request is logged with the tokens it generated before it noticed.
    let cancelled = false;
    let outstanding = 2;
    const settle = () => {
      if (--outstanding === 0 && this.logRequests) {
        this.log(formatLogLine(method, path, res.statusCode, record, performance.now() - started, cancelled));
      }
    };
    res.on('error', () => {}); // a write racing a client reset; the 'close' below handles the reset
    res.on('close', () => {
      cancelled = !res.writableFinished;
      if (cancelled) abort.abort(new Cancelled('the client closed the connection'));
      settle();
    });

    try {
      if (method === 'GET' && path === '/health') {
        sendJson(res, 200, { status: 'ok', model: this.names.served, active: this.admitted, queued: this.generator.queued });
        return;
      }
      this.authorize(req);
      await this.route(method, path, req, res, record, abort.signal);
    } catch (err) {
      if (err instanceof Cancelled || abort.signal.aborted) return;
      let apiError: ApiError;
      if (err instanceof ApiError) {
        apiError = err;
      } else {
        apiError = internalError();
        const detail = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
        this.log(`error: ${method} ${path}: ${detail}`);
      }
      record.errorCode = apiError.code;
      const body = workersAi ? cloudflareErrorBody(apiError) : openAiErrorBody(apiError);
      if (res.headersSent) {
        // Mid-stream: an error event (the OpenAI clients raise it), then the end of the stream.
        const sse = new SseWriter(res);
        sse.send(body);
        sse.end(false);
      } else {
        const headers = { ...apiError.headers };
        // The rest of an oversized body is not worth reading on this connection.
        if (apiError.status === 413) headers['Connection'] = 'close';
        sendJson(res, apiError.status, body, headers);
      }
    } finally {
      settle();
    }
  }

  /** 401 unless the request carries one of the keys (when keys are set). Runs before the body is read. */
  private authorize(req: IncomingMessage): void {
    if (this.keyDigests.length === 0) return;
    const header = req.headers['authorization'] ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    // Compare digests in constant time, so the time taken says nothing about how much of a key matched.
    const given = match ? digest(match[1]!) : null;
    const ok = given !== null && this.keyDigests.some((d) => timingSafeEqual(d, given));
    if (!ok) {
      throw new ApiError(
        401,
        match ? 'Incorrect API key provided.' : "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
        'authentication_error',
        null,
        'invalid_api_key',
      );
    }
  }

  private async route(
    method: string,
    path: string,
    req: IncomingMessage,
    res: ServerResponse,
    record: RequestRecord,
    signal: AbortSignal,
  ): Promise<void> {
    const onlyPost = () => {
      if (method !== 'POST') throw methodNotAllowed(method, path, 'POST');
    };
    if (path === '/v1/models') {
      if (method !== 'GET') throw methodNotAllowed(method, path, 'GET');
      sendJson(res, 200, { object: 'list', data: [...this.names.all, ...this.names.adapters].map((id) => this.modelObject(id)) });
      return;
    }
    if (path.startsWith('/v1/models/')) {
      if (method !== 'GET') throw methodNotAllowed(method, path, 'GET');
      const id = safeDecode(path.slice('/v1/models/'.length));
      if (!this.names.accepts(id)) {
        throw new ApiError(404, `The model '${id.slice(0, 80)}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
      }
      sendJson(res, 200, this.modelObject(id));
      return;
    }
    if (path === '/v1/chat/completions') {
      onlyPost();
      const job = parseChatRequest(await this.readJson(req), this.names, this.generator);
      await this.chatCompletion(job, res, record, signal);
      return;
    }
    if (path === '/v1/completions') {
      onlyPost();
      const job = parseCompletionRequest(await this.readJson(req), this.names, this.generator);
      await this.completion(job, res, record, signal);
      return;
    }
    if (path.startsWith('/ai/run/')) {
      onlyPost();
      const model = safeDecode(path.slice('/ai/run/'.length));
      if (!this.names.accepts(model)) {
        throw new ApiError(404, `No such model ${model.slice(0, 80)}; this server runs ${this.names.served}`, 'not_found_error', null, 'model_not_found');
      }
      const job = parseWorkersAiRequest(await this.readJson(req), this.generator, this.names);
      await this.workersAi(job, res, record, signal);
      return;
    }
    throw new ApiError(404, `Unknown request URL: ${method} ${path.slice(0, 200)}.`, 'invalid_request_error', null, 'unknown_url');
  }

  private async readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    return parseJsonObject(await readBody(req, this.maxBodyBytes));
  }

  private modelObject(id: string): object {
    const base = { id, object: 'model', created: this.created, owned_by: 'openchat-webgpu', max_model_len: this.generator.contextLength };
    // An adapter is listed as vLLM lists one, with its base model as `parent`; `root` is its
    // name where vLLM gives its path (a server does not show its file system).
    const adapter = this.names.adapterFor(id);
    return adapter === undefined ? { ...base, root: this.names.served } : { ...base, id: adapter, root: adapter, parent: this.names.served };
  }

  // -------------------------------------------------------------------------
  // Generation shared by the endpoints

  /**
   * Checks the context and takes a queue slot; returns the slot's release
   * (idempotent). Throws 400 (too long) or 503 (queue full): both before any GPU work.
   */
  private admit(job: GenerationJob, record: RequestRecord, res: ServerResponse): () => void {
    record.promptTokens = job.promptIds.length;
    try {
      this.generator.checkContext(job.promptIds.length, job.params.max_tokens);
    } catch (err) {
      if (err instanceof ContextLengthError) {
        // OpenAI's wording: some clients look for "maximum context length" to trim and retry.
        const asked =
          err.maxTokens === null
            ? `However, your messages resulted in ${err.promptTokens} tokens. Please reduce the length of the messages.`
            : `However, you requested ${err.promptTokens + err.maxTokens} tokens (${err.promptTokens} in the messages, ` +
              `${err.maxTokens} in the completion). Please reduce the length of the messages or completion.`;
        throw new ApiError(400, `This model's maximum context length is ${err.contextLength} tokens. ${asked}`,
          'invalid_request_error', err.maxTokens === null ? 'messages' : 'max_tokens', 'context_length_exceeded');
      }
      throw err;
    }
    if (this.admitted >= 1 + this.maxQueue) {
      throw new ApiError(
        503,
        `The server is busy: ${this.admitted - 1} requests are already waiting (the limit is ${this.maxQueue}). Retry shortly.`,
        'server_error',
        null,
        'server_busy',
        { 'Retry-After': String(RETRY_AFTER_SECONDS) },
      );
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

  /** Runs the job's n choices one after another; throws Cancelled if the client left. */
  private async runChoices(job: GenerationJob, record: RequestRecord, signal: AbortSignal, hooks: ChoiceHooks = {}): Promise<ChoiceResult[]> {
    const work = (async () => {
      const results: ChoiceResult[] = [];
      for (let i = 0; i < job.params.n; i++) {
        hooks.onStart?.(i);
        const params: SamplingParams = { ...job.params, seed: choiceSeed(job.params.seed, i) };
        let text = '';
        let result: ChoiceResult | null = null;
        try {
          for await (const ev of this.generator.generate(job.promptIds, params, signal, { adapter: job.adapter })) {
            if (ev.type === 'text') {
              text += ev.text;
              hooks.onText?.(i, ev.text);
            } else {
              result = { text, finishReason: ev.finishReason, usage: ev.usage, seed: ev.seed };
            }
          }
        } catch (err) {
          // Aborted while waiting in the generator's queue.
          if (signal.aborted) throw new Cancelled('cancelled');
          throw err;
        }
        if (result !== null) record.completionTokens += result.usage.completion_tokens;
        if (result === null || result.finishReason === 'cancelled' || signal.aborted) throw new Cancelled('cancelled');
        record.finishReasons.push(result.finishReason);
        results.push(result);
        hooks.onDone?.(i, result);
      }
      return results;
    })();
    this.inFlight.add(work);
    try {
      return await work;
    } finally {
      this.inFlight.delete(work);
    }
  }

  private usage(job: GenerationJob, results: ChoiceResult[]): Usage {
    // As OpenAI counts n > 1: the prompt once, every choice's completion.
    const completion = results.reduce((sum, r) => sum + r.usage.completion_tokens, 0);
    return { prompt_tokens: job.promptIds.length, completion_tokens: completion, total_tokens: job.promptIds.length + completion };
  }

  // -------------------------------------------------------------------------
  // POST /v1/chat/completions

  private async chatCompletion(job: GenerationJob, res: ServerResponse, record: RequestRecord, signal: AbortSignal): Promise<void> {
    const release = this.admit(job, record, res);
    const id = `chatcmpl-${randomUUID().replaceAll('-', '')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = job.model ?? this.names.served;
    try {
      if (!job.stream) {
        const results = await this.runChoices(job, record, signal);
        sendJson(res, 200, {
          id,
          object: 'chat.completion',
          created,
          model,
          choices: results.map((r, index) => ({
            index,
            message: { role: 'assistant', content: r.text },
            logprobs: null,
            finish_reason: r.finishReason,
            seed: r.seed,
          })),
          usage: this.usage(job, results),
        });
        return;
      }

      const sse = new SseWriter(res);
      sse.open();
      const chunk = (choices: object[], extra: object = {}) => ({
        id,
        object: 'chat.completion.chunk',
        created,
        model,
        choices,
        ...(job.includeUsage ? { usage: null } : {}),
        ...extra,
      });
      const results = await this.runChoices(job, record, signal, {
        onStart: (index) => sse.send(chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }])),
        onText: (index, content) => sse.send(chunk([{ index, delta: { content }, logprobs: null, finish_reason: null }])),
        onDone: (index, r) => sse.send(chunk([{ index, delta: {}, logprobs: null, finish_reason: r.finishReason }])),
      });
      if (job.includeUsage) sse.send(chunk([], { usage: this.usage(job, results) }));
      sse.end();
    } finally {
      release();
    }
  }

  // -------------------------------------------------------------------------
  // POST /v1/completions

  private async completion(job: GenerationJob, res: ServerResponse, record: RequestRecord, signal: AbortSignal): Promise<void> {
    const release = this.admit(job, record, res);
    const id = `cmpl-${randomUUID().replaceAll('-', '')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = job.model ?? this.names.served;
    try {
      if (!job.stream) {
        const results = await this.runChoices(job, record, signal);
        sendJson(res, 200, {
          id,
          object: 'text_completion',
          created,
          model,
          choices: results.map((r, index) => ({ index, text: r.text, logprobs: null, finish_reason: r.finishReason, seed: r.seed })),
          usage: this.usage(job, results),
        });
        return;
      }

      const sse = new SseWriter(res);
      sse.open();
      const chunk = (choices: object[], extra: object = {}) => ({
        id,
        object: 'text_completion',
        created,
        model,
        choices,
        ...(job.includeUsage ? { usage: null } : {}),
        ...extra,
      });
      const results = await this.runChoices(job, record, signal, {
        onText: (index, text) => sse.send(chunk([{ index, text, logprobs: null, finish_reason: null }])),
        onDone: (index, r) => sse.send(chunk([{ index, text: '', logprobs: null, finish_reason: r.finishReason }])),
      });
      if (job.includeUsage) sse.send(chunk([], { usage: this.usage(job, results) }));
      sse.end();
    } finally {
      release();
    }
  }

  // -------------------------------------------------------------------------
  // POST /ai/run/<model> (Cloudflare Workers AI)

  private async workersAi(job: GenerationJob, res: ServerResponse, record: RequestRecord, signal: AbortSignal): Promise<void> {
    const release = this.admit(job, record, res);
    try {
      if (!job.stream) {
        const [r] = await this.runChoices(job, record, signal);
        sendJson(res, 200, { result: { response: r!.text, usage: this.usage(job, [r!]) }, success: true, errors: [], messages: [] });
        return;
      }
      const sse = new SseWriter(res);
      sse.open();
      const results = await this.runChoices(job, record, signal, {
        onText: (_index, response) => sse.send({ response }),
      });
      // The last event carries the usage, as Workers AI's streams do; then [DONE].
      sse.send({ response: '', usage: this.usage(job, results) });
      sse.end();
    } finally {
      release();
    }
  }
}

// ---------------------------------------------------------------------------

/**
 * Cloudflare's REST paths, so a client pointed at a Cloudflare account URL works unchanged:
 *   /client/v4/accounts/<id>/ai/run/<model>  -> /ai/run/<model>
 *   /client/v4/accounts/<id>/ai/v1/...       -> /v1/...   (Workers AI's OpenAI-compatible endpoints)
 * Trailing slashes are dropped.
 */
function normalizePath(path: string): string {
  let p = path.length > 1 ? path.replace(/\/+$/, '') : path;
  const cf = /^\/client\/v4\/accounts\/[^/]+\/ai(\/.*)$/.exec(p);
  if (cf) p = cf[1]!.startsWith('/v1/') ? cf[1]! : `/ai${cf[1]}`;
  return p;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function methodNotAllowed(method: string, path: string, allowed: string): ApiError {
  return new ApiError(405, `${method} is not allowed on ${path}; use ${allowed}`, 'invalid_request_error', null, 'method_not_allowed', {
    Allow: allowed,
  });
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}

/**
 * Choice i of a seeded request runs with seed + i, so n choices differ but the
 * request as a whole replays exactly (choice 0 is what the same seed gives with n = 1).
 */
function choiceSeed(seed: number | null, i: number): number | null {
  if (seed === null) return null;
  const s = seed + i;
  return Number.isSafeInteger(s) ? s : seed - i;
}

function formatLogLine(method: string, path: string, status: number, r: RequestRecord, ms: number, cancelled: boolean): string {
  const parts = [new Date().toISOString(), method, path, String(cancelled ? 499 : status)];
  if (r.promptTokens) parts.push(`prompt_tokens=${r.promptTokens}`, `completion_tokens=${r.completionTokens}`);
  if (r.finishReasons.length) parts.push(`finish=${r.finishReasons.join(',')}`);
  if (r.errorCode) parts.push(`error=${r.errorCode}`);
  if (cancelled) parts.push('cancelled');
  parts.push(`${ms.toFixed(1)}ms`);
  return parts.join(' ');
}
