/**
 * `openchat serve`: an OpenAI-compatible HTTP server (plus Cloudflare Workers
 * AI's text-generation schema) over one loaded Generator, on node:http alone.
 * This file is the server itself (listening, closing, and the pipeline every
 * request goes through); the endpoints' handlers are in routes/.
 *
 * The life of a request, and where each step is:
 *   here: CORS preflight (allowed origins only) -> auth (before the body is
 *     read) -> route to the endpoint's handler -> Content-Type (415 unless JSON);
 *   the handler (routes/): body (size-limited, within the request timeout) ->
 *     JSON -> parse + validate into a GenerationJob (requests.ts; no GPU work yet);
 *   generation.ts: the prompt: refused from its length alone if it cannot fit,
 *     else tokenized in a worker thread while other requests run -> context
 *     check -> admission to the bounded queue (503 when full) ->
 *     Generator.generateChoices, which serializes generations FIFO -> JSON or
 *     SSE reply, in the handler's format.
 * The client leaving (the response's 'close' before it finished) aborts the
 * request's signal: a queued generation never starts, a running one stops after
 * the current token, and its queue slot is freed at once.
 *
 * Every error a request can cause is answered as JSON (errors.ts), in the shape
 * of the API its path belongs to, even those Node's HTTP parser raises before a
 * request exists (the 'clientError' handler); anything unexpected is a 500 with
 * a generic body, and its details go to the log only.
 * The log has one line per request (method, path, status, tokens, latency),
 * never prompt text or API keys; GET /metrics counts the same in Prometheus's format (metrics.ts).
 *
 * Shutting down: drain() (SIGTERM in `openchat serve`) stops taking requests (503 with
 * Retry-After; /health 503 `draining`, so a load balancer stops sending) while those in flight
 * finish; close() then cancels whatever is left.
 */
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Generator } from '../generator.ts';
import { GrammarCompiler } from '../sampling/grammar/compile_worker.ts';
import { ApiError, cloudflareErrorBody, internalError, openAiErrorBody } from './errors.ts';
import { Cancelled, type Exchange, type RequestRecord, type ServerParts } from './exchange.ts';
import { Generations, RETRY_AFTER_SECONDS } from './generation.ts';
import { parseJsonObject, readBody, requireJson, sendJson, SseWriter } from './http.ts';
import { ApiKeys } from './keys.ts';
import { ServerMetrics } from './metrics.ts';
import { ModelNames } from './models.ts';
import { health } from './routes/health.ts';
import { chatCompletions, completions, getModel, listModels } from './routes/openai.ts';
import { workersAiRun } from './routes/workers-ai.ts';
import { isServedModelPath, isWebPath, serveWeb } from './web.ts';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 18888;
/** Largest request body accepted (413 above): 1 MiB holds any prompt that fits an 8K context many times over. */
export const DEFAULT_MAX_BODY_BYTES = 1 << 20;
/** Requests that may wait beyond those the generator decodes together (its maxBatch) before the server answers 503. */
export const DEFAULT_MAX_QUEUE = 32;
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
  /** Loading a model: most sequences decoded together, and the KV-cache budget (GeneratorOptions). */
  maxBatch?: number;
  kvCacheGb?: number;
  host?: string;
  /** 0 picks a free port (tests). */
  port?: number;
  /**
   * With keys, every request except GET /health and the web pages (web.ts) needs
   * `Authorization: Bearer <key>`. An ApiKeys (keys.ts) can be reloaded while the server runs.
   */
  apiKeys?: string[] | ApiKeys;
  /** Serve GET /metrics without a key (default: it needs one when keys are set). */
  metricsPublic?: boolean;
  /** Sent as `X-Replica` on every answer, so a client (or test) behind a load balancer sees which replica answered. */
  replicaName?: string;
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
  /** See OpenChatServer.drain; close() after it. */
  drain(timeoutMs: number): Promise<number>;
}

/** Loads the model (unless one is given) and starts listening. */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const ownsGenerator = options.generator === undefined;
  const generator =
    options.generator ??
    (await Generator.load({
      modelDir: options.modelDir,
      contextLength: options.contextLength,
      lora: options.lora,
      maxBatch: options.maxBatch,
      kvCacheGb: options.kvCacheGb,
    }));
  // Grammars compile in a worker thread while this server runs: a big schema never stalls it.
  const compiler = new GrammarCompiler();
  generator.compileGrammarsWith(compiler);
  const stopCompiler = () => {
    generator.compileGrammarsWith(undefined);
    compiler.close();
  };
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
        stopCompiler();
        if (ownsGenerator) generator.close();
      },
      drain: (timeoutMs) => server.drain(timeoutMs),
    };
  } catch (err) {
    stopCompiler();
    if (ownsGenerator) generator.close();
    throw err;
  }
}

export class OpenChatServer implements ServerParts {
  readonly names: ModelNames;
  readonly generations: Generations;
  readonly created = Math.floor(Date.now() / 1000);
  private readonly http: Server;
  readonly metrics: ServerMetrics;
  /** The keys requests need (none: no key needed); reload() them to take a changed key file. */
  readonly apiKeys: ApiKeys;
  private readonly maxBodyBytes: number;
  private readonly metricsPublic: boolean;
  private readonly replicaName: string | undefined;
  private isDraining = false;
  /** Requests being handled that drain() waits for (all but /health and /metrics). */
  private inFlight = 0;
  private readonly idleWaiters = new Set<() => void>();
  private readonly logSink: (line: string) => void;
  private readonly logRequests: boolean;
  private readonly corsOrigins: ReadonlySet<string>;
  private readonly lastPaths = new WeakMap<Socket, string>();

  constructor(
    readonly generator: Generator,
    options: ServerOptions = {},
  ) {
    this.names = new ModelNames(generator.modelName, options.modelAliases, generator.adapterNames);
    this.apiKeys = options.apiKeys instanceof ApiKeys ? options.apiKeys : ApiKeys.load({ keys: options.apiKeys ?? [] });
    this.metrics = new ServerMetrics({
      modelName: this.names.served,
      adapters: generator.adapterNames,
      contextLength: generator.contextLength,
      kvRegions: generator.maxBatch,
      running: () => generator.running,
      waiting: () => generator.queued,
      kvRegionsInUse: () => generator.regionsInUse,
      draining: () => this.isDraining,
      apiKeys: () => this.apiKeys.count,
    });
    this.generations = new Generations(generator, options.maxQueue ?? DEFAULT_MAX_QUEUE, this.metrics);
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.metricsPublic = options.metricsPublic ?? false;
    this.replicaName = options.replicaName;
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
    this.metrics.request(path ? pathOf(path) : '', 'other', status, false);
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
    return this.generations.active;
  }

  get draining(): boolean {
    return this.isDraining;
  }

  /** Requests being handled (all but /health and /metrics): what drain() waits for. */
  get requestsInFlight(): number {
    return this.inFlight;
  }

  /**
   * Stops taking requests and waits up to `timeoutMs` for those in flight to finish. From now on
   * every new request is answered 503 `server_shutting_down` with Retry-After and
   * `Connection: close`, and /health 503 `draining`; the server keeps listening so that a load
   * balancer's health checks and stray requests get those answers instead of a refused
   * connection. /metrics is still served. Resolves with the number of requests still in flight
   * (0: every one finished); close() cancels them.
   */
  async drain(timeoutMs: number): Promise<number> {
    this.isDraining = true;
    // Idle keep-alive connections (a balancer's pool) go now; one with a request in flight is
    // closed after its answer (Connection: close below).
    this.http.closeIdleConnections();
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.idleWaiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        this.idleWaiters.add(done);
      });
    }
    return this.inFlight;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    // Dropping the connections fires every response's 'close', which aborts its generation.
    this.http.closeAllConnections();
    await closed;
    await this.generations.settled();
  }

  // -------------------------------------------------------------------------
  // One request

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const method = req.method ?? 'GET';
    const path = pathOf(req.url);
    const record: RequestRecord = { promptTokens: 0, completionTokens: 0, cachedTokens: 0, finishReasons: [], errorCode: null };
    const abort = new AbortController();
    const ex: Exchange = {
      method,
      path,
      req,
      res,
      record,
      arrivedAt: started,
      signal: abort.signal,
      readJson: async () => parseJsonObject(await readBody(req, this.maxBodyBytes)),
    };

    // The log line waits for both the response to close and the handler to return, so that a
    // cancelled request is logged with the tokens it generated before it noticed.
    let cancelled = false;
    let outstanding = 2;
    let counted = false;
    const settle = () => {
      if (--outstanding > 0) return;
      this.metrics.request(path, method, res.statusCode, cancelled);
      if (this.logRequests) this.log(formatLogLine(method, path, res.statusCode, record, performance.now() - started, cancelled));
      if (counted && --this.inFlight === 0) for (const done of [...this.idleWaiters]) done();
    };
    res.on('error', () => {}); // a write racing a client reset; the 'close' below handles the reset
    res.on('close', () => {
      cancelled = !res.writableFinished;
      if (cancelled) abort.abort(new Cancelled('the client closed the connection'));
      settle();
    });

    if (this.replicaName !== undefined) res.setHeader('X-Replica', this.replicaName);
    try {
      if (this.cors(req, res)) return;
      if (method === 'GET' && path === '/health') {
        health(this, ex);
        return;
      }
      if (path === '/metrics' && this.metricsPublic) {
        await this.serveMetrics(ex);
        return;
      }
      if (this.isDraining && path !== '/metrics') throw shuttingDown();
      if (path !== '/metrics') {
        counted = true;
        this.inFlight++;
        // An answer that finishes while draining closes its connection, so no new request follows on it.
        if (this.isDraining) res.setHeader('Connection', 'close');
      }
      // The pages (web.ts) need no key: they hold no secrets, and ask for the key their API calls send.
      if ((method === 'GET' || method === 'HEAD') && isWebPath(path)) {
        if (isServedModelPath(path)) this.authorize(req);
        await serveWeb(path, req, res, this.generator.modelDir);
        return;
      }
      this.authorize(req);
      await this.route(ex);
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
    if (!this.apiKeys.required) return;
    const header = req.headers['authorization'] ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    // ApiKeys compares in constant time: the time taken says nothing about how much of a key matched.
    const ok = match !== null && this.apiKeys.accepts(match[1]!);
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

  /** GET /metrics: the Prometheus text (metrics.ts). */
  private async serveMetrics(ex: Exchange): Promise<void> {
    if (ex.method !== 'GET') throw methodNotAllowed(ex.method, ex.path, 'GET');
    const text = await this.metrics.text();
    ex.res.writeHead(200, {
      'Content-Type': this.metrics.contentType,
      'Content-Length': String(Buffer.byteLength(text)),
      'Cache-Control': 'no-store',
    });
    ex.res.end(text);
  }

  /** The endpoint for the method and path; the handlers are in routes/. */
  private async route(ex: Exchange): Promise<void> {
    const { method, path, req } = ex;
    const onlyGet = () => {
      if (method !== 'GET') throw methodNotAllowed(method, path, 'GET');
    };
    const onlyPost = () => {
      if (method !== 'POST') throw methodNotAllowed(method, path, 'POST');
      requireJson(req);
    };
    if (path === '/metrics') return this.serveMetrics(ex);
    if (path === '/v1/models') {
      onlyGet();
      return listModels(this, ex);
    }
    if (path.startsWith('/v1/models/')) {
      onlyGet();
      return getModel(this, ex, safeDecode(path.slice('/v1/models/'.length)));
    }
    if (path === '/v1/chat/completions') {
      onlyPost();
      return chatCompletions(this, ex);
    }
    if (path === '/v1/completions') {
      onlyPost();
      return completions(this, ex);
    }
    if (path.startsWith('/ai/run/')) {
      onlyPost();
      return workersAiRun(this, ex, safeDecode(path.slice('/ai/run/'.length)));
    }
    throw new ApiError(404, `Unknown request URL: ${method} ${path.slice(0, 200)}.`, 'invalid_request_error', null, 'unknown_url');
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

/** 503 while draining: a retry (a load balancer's) goes to another replica. */
function shuttingDown(): ApiError {
  return new ApiError(
    503,
    'The server is shutting down and takes no new requests. Retry shortly: behind a load balancer the retry goes to another replica.',
    'server_error',
    null,
    'server_shutting_down',
    { 'Retry-After': String(RETRY_AFTER_SECONDS), Connection: 'close' },
  );
}

function formatLogLine(method: string, path: string, status: number, r: RequestRecord, ms: number, cancelled: boolean): string {
  const parts = [new Date().toISOString(), method, path, String(cancelled ? 499 : status)];
  if (r.promptTokens) parts.push(`prompt_tokens=${r.promptTokens}`, `completion_tokens=${r.completionTokens}`, `cached_tokens=${r.cachedTokens}`);
  if (r.finishReasons.length) parts.push(`finish=${r.finishReasons.join(',')}`);
  if (r.errorCode) parts.push(`error=${r.errorCode}`);
  if (cancelled) parts.push('cancelled');
  parts.push(`${ms.toFixed(1)}ms`);
  return parts.join(' ');
}
