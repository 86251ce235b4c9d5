/**
 * Who answers the chat page: the server (POST /v1/chat/completions, streamed, as any OpenAI
 * client sends it) or the engine in this tab (src/web/tab_api.ts). Both give the same events
 * (ChatEvent), so the page renders, measures and stores an answer one way whichever answered.
 *
 * For the server the page measures what the tab's engine measures itself: time to first token
 * from the request's start to the first chunk with text, and decode speed as the completion
 * tokens after the first over the time from that chunk to the one that says the answer finished.
 */
import type { ChatEvent, ChatMessage, ChatParams, TabEngine } from '../../web/tab_api.ts';

export type BackendKind = 'server' | 'tab';

export interface ChatRequest {
  messages: ChatMessage[];
  params: ChatParams;
  /** The conversation's X-Session-Id (load-balancer affinity; the tab has no use for it). */
  sessionId: string;
  /** Stops the answer: the stream then ends early (the tab's with a 'cancelled' done event). */
  signal: AbortSignal;
}

export interface ChatBackend {
  readonly kind: BackendKind;
  /** The model that answers, for the header and the answer's record; null while unknown (or none loaded). */
  modelName(): string | null;
  /** Why this backend cannot take a message now, in words for the user; null when it can. */
  refusal(): string | null;
  /** Streams an answer. Errors are Errors whose message says what went wrong, ready to show. */
  chat(req: ChatRequest): AsyncIterable<ChatEvent>;
}

interface ApiErrorBody {
  error?: { message?: string; code?: string | null };
}

interface ChatChunk extends ApiErrorBody {
  choices?: Array<{ delta?: { content?: string }; finish_reason?: string | null }>;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  model?: string;
}

/** An HTTP error answer from the server, in the API's words ("401: Incorrect API key provided. (invalid_api_key)"). */
export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The API's own words for an error body: its message, and its code when it has one. */
function apiErrorText(status: number | null, body: ApiErrorBody | null, fallback: string): string {
  const message = body?.error?.message ?? fallback;
  const code = body?.error?.code;
  return `${status === null ? '' : `${status}: `}${message}${code ? ` (${code})` : ''}`;
}

async function httpError(res: Response): Promise<HttpError> {
  const text = await res.text();
  let body: ApiErrorBody | null = null;
  try {
    body = JSON.parse(text) as ApiErrorBody;
  } catch {
    // Not JSON (a proxy's page): show the start of it.
  }
  return new HttpError(res.status, apiErrorText(res.status, body, text.slice(0, 300) || res.statusText));
}

/** The `data:` payloads of a server-sent-events body, as they arrive; ends quietly when `signal` aborts. */
async function* sseData(body: ReadableStream<Uint8Array>, signal: AbortSignal): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const onAbort = () => void reader.cancel().catch(() => {});
  signal.addEventListener('abort', onAbort);
  let buffered = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        for (const line of event.split('\n')) if (line.startsWith('data: ')) yield line.slice(6);
      }
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** Decode speed: the tokens after the first, over the seconds between the first and the last. */
export function decodeRate(completionTokens: number, firstMs: number, endMs: number): number {
  if (completionTokens < 2 || endMs <= firstMs) return Number.NaN;
  return (completionTokens - 1) / ((endMs - firstMs) / 1000);
}

/**
 * The server that served the page. The API key (when it runs with --api-keys) is read from the
 * page's field for every request and sent as `Authorization: Bearer`. Stopping aborts the request:
 * the server sees the connection close and cancels the generation after the current token; its
 * token counts then never come, so a stopped answer ends without a done event.
 */
export class ServerBackend implements ChatBackend {
  readonly kind = 'server';
  private model: string | null = null;

  constructor(private readonly apiKey: () => string) {}

  modelName(): string | null {
    return this.model;
  }

  refusal(): string | null {
    return null;
  }

  private headers(json: boolean): Record<string, string> {
    const h: Record<string, string> = {};
    if (json) h['Content-Type'] = 'application/json';
    const key = this.apiKey();
    if (key) h['Authorization'] = `Bearer ${key}`;
    return h;
  }

  /** Asks the server which model it serves (GET /v1/models); throws HttpError, or an Error when it cannot be reached. */
  async fetchModelName(): Promise<string | null> {
    let res: Response;
    try {
      res = await fetch('/v1/models', { headers: this.headers(false) });
    } catch (err) {
      throw new Error(`cannot reach the server: ${(err as Error).message}`);
    }
    if (!res.ok) {
      this.model = null;
      throw await httpError(res);
    }
    const list = (await res.json()) as { data: Array<{ id: string }> };
    this.model = list.data[0]?.id ?? null;
    return this.model;
  }

  async *chat({ messages, params, sessionId, signal }: ChatRequest): AsyncGenerator<ChatEvent> {
    const started = performance.now();
    let res: Response;
    try {
      res = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: { ...this.headers(true), 'X-Session-Id': sessionId },
        body: JSON.stringify({
          model: this.model ?? 'openchat_3.5',
          messages,
          stream: true,
          stream_options: { include_usage: true },
          ...params,
        }),
        signal,
      });
    } catch (err) {
      if (signal.aborted) return;
      throw new Error(`the request failed: ${(err as Error).message}`);
    }
    if (!res.ok || !res.body) throw await httpError(res);

    let first: number | null = null;
    let end: number | null = null;
    let finishReason: string | null = null;
    let usage: ChatChunk['usage'] = null;
    try {
      for await (const data of sseData(res.body, signal)) {
        if (data === '[DONE]') break;
        let chunk: ChatChunk;
        try {
          chunk = JSON.parse(data) as ChatChunk;
        } catch {
          throw new Error(`the server sent an event that is not JSON: ${data.slice(0, 80)}`);
        }
        if (chunk.error) throw new Error(apiErrorText(null, chunk, 'the stream ended with an error'));
        if (chunk.model) this.model = chunk.model;
        const choice = chunk.choices?.[0];
        const piece = choice?.delta?.content;
        if (piece) {
          first ??= performance.now();
          yield { type: 'text', text: piece };
        }
        if (choice?.finish_reason) {
          finishReason = choice.finish_reason;
          end = performance.now();
        }
        if (chunk.usage) usage = chunk.usage;
      }
    } catch (err) {
      if (signal.aborted) return;
      // fetch's reader says a dropped connection with a TypeError ("network error").
      if (err instanceof TypeError) throw new Error(`the stream broke off: ${err.message}`);
      throw err;
    }
    if (signal.aborted) return;
    if (!usage || finishReason === null) throw new Error('the stream ended before the answer finished (no finish_reason or token counts came)');
    const last = end ?? performance.now();
    yield {
      type: 'done',
      finishReason,
      usage: { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens },
      timeToFirstTokenMs: (first ?? last) - started,
      decodeTokensPerSecond: decodeRate(usage.completion_tokens, first ?? last, last),
    };
  }
}

/** The engine in this tab, once its bundle is imported and a model loaded (the tab panel does both). */
export class TabBackend implements ChatBackend {
  readonly kind = 'tab';

  /** `engine`: the engine, or null before its bundle is loaded; `busy`: why it cannot chat now (loading), or null. */
  constructor(private readonly engine: () => TabEngine | null, private readonly busy: () => string | null) {}

  modelName(): string | null {
    return this.engine()?.loaded()?.name ?? null;
  }

  refusal(): string | null {
    const busy = this.busy();
    if (busy) return busy;
    if (!this.engine()?.loaded()) {
      return 'no model is loaded in this tab: load one in the panel (the bundled tiny model, a folder, a GGUF file or a URL), or choose the server as the backend';
    }
    return null;
  }

  async *chat({ messages, params, signal }: ChatRequest): AsyncGenerator<ChatEvent> {
    const engine = this.engine();
    const refused = this.refusal();
    if (refused || !engine) throw new Error(refused ?? 'the engine is not loaded');
    yield* engine.chat(messages, params, signal);
  }
}
