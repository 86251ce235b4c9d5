/**
 * `openchat serve`: an OpenAI-compatible HTTP server (plus Cloudflare Workers
 * AI's text-generation schema) over one loaded Generator, on node:http alone.
 *
 * The life of a request:
 *   CORS preflight (allowed origins only) -> auth (before the body is read) ->
 *   route -> Content-Type (415 unless JSON) -> body (size-limited, within the
 *   request timeout) -> JSON -> parse + validate into a GenerationJob
 *   (requests.ts; no GPU work yet) -> the prompt: refused from its length alone
 *   if it cannot fit, else tokenized in a worker thread while other requests run ->
 *   context check -> admission to the bounded queue (503 when full) ->
 *   Generator.generateChoices, which serializes generations FIFO -> JSON or SSE reply.
 * The client leaving (the response's 'close' before it finished) aborts the
 * request's signal: a queued generation never starts, a running one stops after
 * the current token, and its queue slot is freed at once.
 *
 * Every error a request can cause is answered as JSON (errors.ts), in the shape
 * of the API its path belongs to, even those Node's HTTP parser raises before a
 * request exists (the 'clientError' handler); anything unexpected is a 500 with
 * a generic body, and its details go to the log only.
 * The log has one line per request (method, path, status, tokens, latency),
 * never prompt text or API keys.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ContextLengthError, Generator, type FinishReason, type TokenLogprobs, type Usage } from '../generator.ts';
import { chatLogprobs, legacyLogprobs, type TokenTexts } from './logprobs.ts';
import { parseToolCall, type ToolCall } from './structured.ts';
import {
  ApiError,
  badRequest,
  cloudflareErrorBody,
  internalError,
  openAiErrorBody,
} from './errors.ts';
import { parseJsonObject, readBody, requireJson, sendJson, SseWriter } from './http.ts';
import { ModelNames } from './models.ts';
import { isWebPath, serveWeb } from './web.ts';
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
/**
 * Milliseconds a client has to send a whole request, headers and body (408 after): ample for
 * 1 MiB on a slow link, and far below Node's 300 s, so a stalled upload does not hold a socket.
 * Streaming a response is not bounded by it.
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export interface ServerOptions {
  /** An already loaded model. The caller keeps it: close() leaves it loaded. */
  generator?: Generator;
  /** Otherwise a model folder to load (default: $OPENCHAT_MODEL, then the bundled tiny model). */
  modelDir?: string;
  contextLength?: number;
  host?: string;
  /** 0 picks a free port (tests). */
  port?: number;
  /** With keys, every request except GET /health and the web pages (web.ts) needs `Authorization: Bearer <key>`. */
  apiKeys?: string[];
  maxBodyBytes?: number;
  maxQueue?: number;
  /** Write one line per request. Default true. */
  logRequests?: boolean;
  /** Where log lines go (request lines and unexpected errors). Default: stderr. */
  log?: (line: string) => void;
  /** More model names to accept, beyond the folder name and the OpenChat aliases (models.ts). */
  modelAliases?: string[];
  /**
   * Browser origins (e.g. "https://app.example.com") allowed to call the API cross-site; "*" allows
   * any. Default none: no CORS headers, so browsers keep other sites' pages out.
   */
  corsOrigins?: string[];
  /** Time to receive a whole request (headers and body), in ms; default DEFAULT_REQUEST_TIMEOUT_MS. */
  requestTimeoutMs?: number;
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
  /** With logprobs: every token's (all of them; `tailLogprobs` those no text event carried). */
  logprobs: TokenLogprobs[];
  tailLogprobs: TokenLogprobs[];
}

/** Callbacks a streaming reply hooks into, per choice. */
interface ChoiceHooks {
  onStart?(index: number): void;
  onText?(index: number, text: string, logprobs: TokenLogprobs[]): void;
  onDone?(index: number, result: ChoiceResult): void;
}

/** What a stream has sent of a choice's tokens so far (the completions layout's text offsets). */
interface LogprobsSent {
  chars: number;
  tokens: number;
}

/**
 * What differs between the two OpenAI endpoints' answers; `openAiReply` writes both, streamed
 * or not, from this. `logprobs` is the shape's layout of some tokens' log-probabilities (null
 * when not asked for); `call` a tool call the answer made (chat only: completions have no tools).
 */
interface OpenAiShape {
  idPrefix: string;
  object: string;
  chunkObject: string;
  /** A finished choice in a non-streamed answer, without its index. */
  choice(r: ChoiceResult, logprobs: object | null, call: ToolCall | null): object;
  /** A chunk's choice for the start of a choice (chat: the role), or null for none. */
  startChoice(index: number): object | null;
  textChoice(index: number, text: string, logprobs: object | null): object;
  /** A complete tool call, streamed as one delta (chat). */
  toolCallChoice(index: number, call: ToolCall, logprobs: object | null): object;
  finishChoice(index: number, finishReason: FinishReason | 'tool_calls', logprobs: object | null): object;
  /** These tokens' log-probabilities in the shape's layout; `sent` is updated for the next chunk. */
  logprobs(texts: TokenTexts, tokens: TokenLogprobs[], sent: LogprobsSent): object;
}

const CHAT_COMPLETION: OpenAiShape = {
  idPrefix: 'chatcmpl-',
  object: 'chat.completion',
  chunkObject: 'chat.completion.chunk',
  choice: (r, logprobs, call) => ({
    message: call ? { role: 'assistant', content: null, tool_calls: [openAiToolCall(call)] } : { role: 'assistant', content: r.text },
    logprobs,
    finish_reason: call ? 'tool_calls' : r.finishReason,
    seed: r.seed,
  }),
  startChoice: (index) => ({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }),
  textChoice: (index, content, logprobs) => ({ index, delta: { content }, logprobs, finish_reason: null }),
  toolCallChoice: (index, call, logprobs) => ({ index, delta: { tool_calls: [{ index: 0, ...openAiToolCall(call) }] }, logprobs, finish_reason: null }),
  finishChoice: (index, finishReason, logprobs) => ({ index, delta: {}, logprobs, finish_reason: finishReason }),
  logprobs: (texts, tokens) => ({ content: chatLogprobs(texts, tokens) }),
};

const TEXT_COMPLETION: OpenAiShape = {
  idPrefix: 'cmpl-',
  object: 'text_completion',
  chunkObject: 'text_completion',
  choice: (r, logprobs) => ({ text: r.text, logprobs, finish_reason: r.finishReason, seed: r.seed }),
  startChoice: () => null,
  textChoice: (index, text, logprobs) => ({ index, text, logprobs, finish_reason: null }),
  toolCallChoice: () => {
    throw new Error('a text completion has no tool calls'); // requests.ts refuses tools there
  },
  finishChoice: (index, finishReason, logprobs) => ({ index, text: '', logprobs, finish_reason: finishReason }),
  logprobs: (texts, tokens, sent) => {
    const out = legacyLogprobs(texts, tokens, sent.chars, sent.tokens === 0);
    sent.chars += out.tokens.join('').length;
    sent.tokens += tokens.length;
    return out;
  },
};

/** The request was cancelled (the client left); nothing more is sent. */
class Cancelled extends Error {}

export class OpenChatServer {
  readonly names: ModelNames;
  private readonly http: Server;
  private readonly maxBodyBytes: number;
  private readonly maxQueue: number;
  private readonly keyDigests: Buffer[];
  private readonly logSink: (line: string) => void;
  private readonly logRequests: boolean;
  private readonly corsOrigins: ReadonlySet<string>;
  private readonly lastPaths = new WeakMap<Socket, string>();
  /** Requests admitted for generation: the running one plus those waiting. */
  private admitted = 0;
  /** Requests whose prompts are being tokenized (bounded like the queue: a flood waits in neither). */
  private tokenizing = 0;
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
    this.logSink = options.log ?? ((line) => process.stderr.write(line + '\n'));
    this.logRequests = options.logRequests ?? true;
    this.corsOrigins = new Set(options.corsOrigins ?? []);
    const requestTimeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.http = createServer(
      {
        requestTimeout,
        headersTimeout: requestTimeout,
        // How often Node looks for requests past their timeout (its default, 30 s, would let a
        // 1 s timeout run to 30 s).
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(requestTimeout / 4))),
        // Node would answer an HTTP/1.1 request without Host with an empty 400; this server has
        // no use for Host, and every answer it gives is JSON.
        requireHostHeader: false,
      },
      (req, res) => void this.handle(req, res),
    );
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.clientError(err, socket));
    // The path of the request each connection last began, for clientError's answer when the
    // packet that failed (stalled headers, a late parse error) no longer holds the request line.
    // (A 'data' listener makes Node parse in JavaScript instead of C++: no matter at this load.)
    this.http.on('connection', (socket: Socket) => {
      socket.on('data', (chunk: Buffer) => {
        const path = requestLinePath(chunk);
        if (path !== null) this.lastPaths.set(socket, path);
      });
    });
    // `Expect: 100-continue` is answered by Node; any other expectation is a 417, in JSON.
    this.http.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      const err = new ApiError(417, `unsupported Expect header '${String(req.headers['expect']).slice(0, 80)}'; only 100-continue is supported`, 'invalid_request_error', null, 'expectation_failed');
      sendJson(res, 417, this.errorBody(pathOf(req.url), err), { Connection: 'close' });
    });
  }

  /** One log line; a log that cannot be written must not take a request (or the server) down. */
  private log(line: string): void {
    try {
      this.logSink(line);
    } catch {
      // The sink reports its own failures (see cli/commands/serve.ts); nothing more to do here.
    }
  }

  /** An error body in the shape of the API that `path` belongs to. */
  private errorBody(path: string, err: ApiError): object {
    return isWorkersAiPath(path) ? cloudflareErrorBody(err) : openAiErrorBody(err);
  }

  /**
   * Node's HTTP parser refused what arrived (bad chunking, conflicting Content-Lengths, a
   * garbage request line, headers over the limit) or the request timeout ran out: there is no
   * request object, so the JSON answer is written on the socket itself, then it is closed.
   * The path, when it can be read, picks the error shape.
   */
  private clientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // A response this connection already started (a stream) cannot take another one.
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse & { req?: IncomingMessage } })._httpMessage;
    if (inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const [status, code, message] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'request_header_fields_too_large', 'the request headers are larger than the limit (16 KiB)']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'request_timeout', 'the request was not received in time; send the headers and body without pausing']
          : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
            ? [413, 'request_too_large', 'the chunk extensions are larger than the limit']
            : [400, 'invalid_http', `the request is not valid HTTP/1.1 (${err.code ?? 'parse error'})`];
    const packet = (err as { rawPacket?: Buffer }).rawPacket;
    const path = inFlight?.req?.url ?? (packet && requestLinePath(packet)) ?? this.lastPaths.get(socket) ?? '';
    const text = JSON.stringify(this.errorBody(pathOf(path), new ApiError(status, message, 'invalid_request_error', null, code)));
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
      () => socket.destroy(),
    );
    if (this.logRequests) this.log(`${new Date().toISOString()} - ${path ? pathOf(path).slice(0, 200) : '-'} ${status} error=${code}`);
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
    const path = pathOf(req.url);
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
      if (this.cors(req, res)) return;
      if (method === 'GET' && path === '/health') {
        sendJson(res, 200, { status: 'ok', model: this.names.served, active: this.admitted, queued: this.generator.queued });
        return;
      }
      // The pages (web.ts) need no key: they hold no secrets, and ask for the key their API calls send.
      if ((method === 'GET' || method === 'HEAD') && isWebPath(path)) {
        await serveWeb(path, req, res);
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
      const body = this.errorBody(path, apiError);
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

  /**
   * CORS, for the origins given (none by default): every answer to an allowed origin carries
   * Access-Control-Allow-Origin, and its preflight (OPTIONS with Access-Control-Request-Method)
   * is answered here with 204, before the API key check (browsers send no credentials in a
   * preflight). Returns true when it answered. Other origins get no CORS headers, so browsers
   * do not let their pages read the answers, and their preflights fall through to the 405.
   */
  private cors(req: IncomingMessage, res: ServerResponse): boolean {
    const origin = req.headers['origin'];
    if (origin === undefined || this.corsOrigins.size === 0) return false;
    // The answer depends on the origin (a cache must not hand one origin's answer to another).
    res.setHeader('Vary', 'Origin');
    const any = this.corsOrigins.has('*');
    if (!any && !this.corsOrigins.has(origin)) return false;
    res.setHeader('Access-Control-Allow-Origin', any ? '*' : origin);
    res.setHeader('Access-Control-Expose-Headers', 'Retry-After');
    if (req.method !== 'OPTIONS' || req.headers['access-control-request-method'] === undefined) return false;
    const asked = req.headers['access-control-request-headers'] ?? '';
    res.writeHead(204, {
      'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
      // The headers the page's client asked for (the OpenAI client sends its own x-stainless-*), if well-formed.
      'Access-Control-Allow-Headers': /^[\w-]+(\s*,\s*[\w-]+)*$/.test(asked) ? asked : 'Authorization, Content-Type',
      'Access-Control-Max-Age': '600',
      'Content-Length': '0',
    });
    res.end();
    return true;
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
      requireJson(req);
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
      await this.openAiReply(CHAT_COMPLETION, job, res, record, signal);
      return;
    }
    if (path === '/v1/completions') {
      onlyPost();
      const job = parseCompletionRequest(await this.readJson(req), this.names, this.generator);
      await this.openAiReply(TEXT_COMPLETION, job, res, record, signal);
      return;
    }
    if (path.startsWith('/ai/run/')) {
      onlyPost();
      const model = safeDecode(path.slice('/ai/run/'.length));
      if (!this.names.accepts(model)) {
        throw new ApiError(404, `No such model ${model.slice(0, 80)}; this server runs ${this.names.served}`, 'not_found_error', null, 'model_not_found');
      }
      if (this.names.adapterFor(model) !== undefined) {
        // Workers AI names the base model in the path and the adapter in `lora`; one way only.
        throw badRequest(`${model.slice(0, 80)} is a LoRA adapter: on /ai/run the path names the base model (${this.names.served}) and the lora field the adapter`, 'lora');
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
   * The job's prompt ids, if it fits the context: a prompt whose length alone shows it cannot
   * fit is refused before tokenizing; otherwise it is tokenized in the tokenizer's worker
   * thread, slice by slice, while the event loop serves other requests (/health included).
   * 400 context_length_exceeded otherwise.
   */
  private async promptIds(job: GenerationJob, record: RequestRecord, signal: AbortSignal): Promise<number[]> {
    if (this.tokenizing >= 1 + this.maxQueue) throw this.busy(`${this.tokenizing} requests are already being tokenized (the limit is ${1 + this.maxQueue})`);
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

  /** 503 server_busy with Retry-After, saying why. */
  private busy(why: string): ApiError {
    return new ApiError(
      503,
      `The server is busy: ${why}. Retry shortly.`,
      'server_error',
      null,
      'server_busy',
      { 'Retry-After': String(RETRY_AFTER_SECONDS) },
    );
  }

  /**
   * Takes a queue slot; returns the slot's release (idempotent). Throws 503 when the queue is
   * full, before any GPU work.
   */
  private admit(res: ServerResponse): () => void {
    if (this.admitted >= 1 + this.maxQueue) throw this.busy(`${this.admitted - 1} requests are already waiting (the limit is ${this.maxQueue})`);
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
  private async runChoices(
    job: GenerationJob,
    promptIds: number[],
    record: RequestRecord,
    signal: AbortSignal,
    hooks: ChoiceHooks = {},
  ): Promise<ChoiceResult[]> {
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

  private usage(promptIds: number[], results: ChoiceResult[]): Usage {
    // As OpenAI counts n > 1: the prompt once, every choice's completion.
    const completion = results.reduce((sum, r) => sum + r.usage.completion_tokens, 0);
    return { prompt_tokens: promptIds.length, completion_tokens: completion, total_tokens: promptIds.length + completion };
  }

  // -------------------------------------------------------------------------
  // POST /v1/chat/completions and POST /v1/completions: one writer, two shapes

  private async openAiReply(shape: OpenAiShape, job: GenerationJob, res: ServerResponse, record: RequestRecord, signal: AbortSignal): Promise<void> {
    const promptIds = await this.promptIds(job, record, signal);
    const release = this.admit(res);
    const id = `${shape.idPrefix}${randomUUID().replaceAll('-', '')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = job.model ?? this.names.served;
    try {
      if (!job.stream) {
        const results = await this.runChoices(job, promptIds, record, signal);
        sendJson(res, 200, {
          id,
          object: shape.object,
          created,
          model,
          choices: results.map((r, index) => {
            const call = job.tools ? parseToolCall(r.text, job.tools) : null;
            const logprobs = job.options.logprobs ? shape.logprobs(this.generator, r.logprobs, { chars: 0, tokens: 0 }) : null;
            return { index, ...shape.choice(r, logprobs, call) };
          }),
          usage: this.usage(promptIds, results),
        });
        return;
      }

      const sse = new SseWriter(res);
      sse.open();
      const chunk = (choices: object[], extra: object = {}) => ({
        id,
        object: shape.chunkObject,
        created,
        model,
        choices,
        ...(job.includeUsage ? { usage: null } : {}),
        ...extra,
      });
      let sent: LogprobsSent = { chars: 0, tokens: 0 };
      const lp = (tokens: TokenLogprobs[]) => (job.options.logprobs && tokens.length ? shape.logprobs(this.generator, tokens, sent) : null);
      const sendText = (index: number, text: string, tokens: TokenLogprobs[]) => sse.send(chunk([shape.textChoice(index, text, lp(tokens))]));
      // With tools the answer may be a call: hold the text until its first visible character
      // says which (a call is sent whole, as one tool-call delta, once complete).
      let held = { text: '', tokens: [] as TokenLogprobs[], mode: 'text' as 'text' | 'call' | 'undecided' };
      const results = await this.runChoices(job, promptIds, record, signal, {
        onStart: (index) => {
          sent = { chars: 0, tokens: 0 };
          held = { text: '', tokens: [], mode: job.tools ? 'undecided' : 'text' };
          const start = shape.startChoice(index);
          if (start !== null) sse.send(chunk([start]));
        },
        onText: (index, text, tokens) => {
          if (held.mode === 'text') return sendText(index, text, tokens);
          held.text += text;
          held.tokens.push(...tokens);
          if (held.mode === 'undecided' && held.text.trim()) {
            held.mode = held.text.trimStart().startsWith('{') ? 'call' : 'text';
            if (held.mode === 'text') sendText(index, held.text, held.tokens);
          }
        },
        onDone: (index, r) => {
          const call = held.mode !== 'text' && job.tools ? parseToolCall(r.text, job.tools) : null;
          if (call) sse.send(chunk([shape.toolCallChoice(index, call, lp([...held.tokens, ...r.tailLogprobs]))]));
          else if (held.mode !== 'text' && held.text) sendText(index, held.text, held.tokens);
          sse.send(chunk([shape.finishChoice(index, call ? 'tool_calls' : r.finishReason, call ? null : lp(r.tailLogprobs))]));
        },
      });
      if (job.includeUsage) sse.send(chunk([], { usage: this.usage(promptIds, results) }));
      sse.end();
    } finally {
      release();
    }
  }

  // -------------------------------------------------------------------------
  // POST /ai/run/<model> (Cloudflare Workers AI)

  private async workersAi(job: GenerationJob, res: ServerResponse, record: RequestRecord, signal: AbortSignal): Promise<void> {
    const promptIds = await this.promptIds(job, record, signal);
    const release = this.admit(res);
    try {
      if (!job.stream) {
        const [r] = await this.runChoices(job, promptIds, record, signal);
        const call = job.tools ? parseToolCall(r!.text, job.tools) : null;
        const result = call
          ? { response: '', tool_calls: [workersAiToolCall(call)], usage: this.usage(promptIds, [r!]) }
          : { response: r!.text, usage: this.usage(promptIds, [r!]) };
        sendJson(res, 200, { result, success: true, errors: [], messages: [] });
        return;
      }
      const sse = new SseWriter(res);
      sse.open();
      // With tools, text is held until its first visible character says whether it is a call.
      let held = '';
      let mode: 'text' | 'call' | 'undecided' = job.tools ? 'undecided' : 'text';
      const results = await this.runChoices(job, promptIds, record, signal, {
        onText: (_index, response) => {
          if (mode === 'text') return sse.send({ response });
          held += response;
          if (mode === 'undecided' && held.trim()) {
            mode = held.trimStart().startsWith('{') ? 'call' : 'text';
            if (mode === 'text') sse.send({ response: held });
          }
        },
        onDone: (_index, r) => {
          const call = mode !== 'text' && job.tools ? parseToolCall(r.text, job.tools) : null;
          if (call) sse.send({ response: '', tool_calls: [workersAiToolCall(call)] });
          else if (mode !== 'text' && held) sse.send({ response: held });
        },
      });
      // The last event carries the usage, as Workers AI's streams do; then [DONE].
      sse.send({ response: '', usage: this.usage(promptIds, results) });
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

/** The target of the request line `chunk` starts with, or null. */
function requestLinePath(chunk: Buffer): string | null {
  return /^[A-Z]+ (\S+)/.exec(chunk.subarray(0, 2048).toString('latin1'))?.[1] ?? null;
}

/** A request URL's normalized path (no query). */
function pathOf(url: string | undefined): string {
  return normalizePath((url ?? '/').split('?')[0] || '/');
}

/** Workers AI's paths (/ai/run/..., and /ai itself) answer errors in Cloudflare's envelope. */
function isWorkersAiPath(path: string): boolean {
  return path === '/ai' || path.startsWith('/ai/');
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

function formatLogLine(method: string, path: string, status: number, r: RequestRecord, ms: number, cancelled: boolean): string {
  const parts = [new Date().toISOString(), method, path, String(cancelled ? 499 : status)];
  if (r.promptTokens) parts.push(`prompt_tokens=${r.promptTokens}`, `completion_tokens=${r.completionTokens}`);
  if (r.finishReasons.length) parts.push(`finish=${r.finishReasons.join(',')}`);
  if (r.errorCode) parts.push(`error=${r.errorCode}`);
  if (cancelled) parts.push('cancelled');
  parts.push(`${ms.toFixed(1)}ms`);
  return parts.join(' ');
}

/** OpenAI's tool call object. */
function openAiToolCall(call: ToolCall): object {
  return { id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } };
}

/** Workers AI's tool call: the arguments as an object. */
function workersAiToolCall(call: ToolCall): object {
  return { name: call.name, arguments: JSON.parse(call.arguments) as unknown };
}
