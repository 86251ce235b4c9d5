/**
 * Test helpers for the operations tests (metrics, drain, keys, replicas): a streamed chat read
 * event by event, and single requests on a connection of their own (node:http without an
 * agent), so that a test never depends on a pooled keep-alive connection the server has closed.
 */
import { request } from 'node:http';

export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One request on a fresh connection. */
export function httpRequest(url: string, opts: { method?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<Answer> {
  const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: opts.method ?? (body === undefined ? 'GET' : 'POST'),
        agent: false,
        headers: { ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...opts.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
          resolve({ status: res.statusCode ?? 0, headers, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The chunk fields the tests read (a test checks the rest itself). */
export interface Chunk {
  choices?: Array<{ delta?: { content?: string }; finish_reason?: string | null }>;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  error?: { message: string; code: string | null };
}

export interface StreamResult {
  status: number;
  headers: Headers;
  chunks: Chunk[];
  /** `data: [DONE]` arrived: the stream ended as a complete answer does. */
  done: boolean;
  text: string;
  finishReason: string | null;
  usage: Chunk['usage'];
  /** ms from the request to its first content, and to its end (client side). */
  firstContentMs: number | null;
  totalMs: number;
  /** performance.now() when it ended. */
  endedAt: number;
}

/**
 * A streamed chat completion, read as it arrives. `firstContent` resolves at the first piece of
 * text (the generation is running by then); `result` when the stream ends, by [DONE] or by the
 * connection closing (an abort through `signal` ends it too, without throwing).
 */
export class ChatStream {
  readonly firstContent: Promise<void>;
  readonly result: Promise<StreamResult>;
  private markContent!: () => void;

  constructor(url: string, body: Record<string, unknown>, headers: Record<string, string> = {}, signal?: AbortSignal) {
    this.firstContent = new Promise((resolve) => (this.markContent = resolve));
    this.result = this.run(url, body, headers, signal);
    // A stream that fails before any text must not leave firstContent waiting forever.
    this.result.then(
      () => this.markContent(),
      () => this.markContent(),
    );
  }

  private async run(url: string, body: Record<string, unknown>, headers: Record<string, string>, signal?: AbortSignal): Promise<StreamResult> {
    const started = performance.now();
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal,
    });
    const out: StreamResult = { status: res.status, headers: res.headers, chunks: [], done: false, text: '', finishReason: null, usage: null, firstContentMs: null, totalMs: 0, endedAt: 0 };
    if (!res.body) return out;
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for await (const bytes of res.body) {
        buffered += decoder.decode(bytes as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const event = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          if (!event.startsWith('data: ')) continue;
          const data = event.slice('data: '.length);
          if (data === '[DONE]') {
            out.done = true;
            continue;
          }
          const chunk = JSON.parse(data) as Chunk;
          out.chunks.push(chunk);
          const piece = chunk.choices?.[0]?.delta?.content;
          if (piece) {
            out.text += piece;
            if (out.firstContentMs === null) {
              out.firstContentMs = performance.now() - started;
              this.markContent();
            }
          }
          const finish = chunk.choices?.[0]?.finish_reason;
          if (finish) out.finishReason = finish;
          if (chunk.usage) out.usage = chunk.usage;
        }
      }
    } catch (err) {
      // The connection ended early (an abort, the server closing it): what arrived is the result.
      if (!signal?.aborted && !(err instanceof TypeError) && (err as { name?: string }).name !== 'AbortError') throw err;
    }
    out.endedAt = performance.now();
    out.totalMs = out.endedAt - started;
    return out;
  }
}

/** Waits until `check` holds (polling), or fails saying what it waited for. */
export async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
