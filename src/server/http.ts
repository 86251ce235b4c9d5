/**
 * Small node:http helpers: a size-limited JSON body reader, JSON replies, and a
 * server-sent-events writer that stays quiet once the client has gone.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError } from './errors.ts';

/**
 * Reads the whole body, refusing (413) more than `limit` bytes. A declared
 * Content-Length over the limit is refused before a byte is read; a chunked
 * body is counted as it arrives and refused as soon as it passes the limit.
 * After a refusal the rest of the body is read and dropped (not kept in memory),
 * so that the client, still sending, gets to read the 413 rather than a reset.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () =>
    new ApiError(413, `the request body is larger than the limit of ${limit} bytes`, 'invalid_request_error', null, 'request_too_large');
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(tooLarge());
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > limit) {
        refused = true;
        chunks.length = 0;
        reject(tooLarge());
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => {
      if (!refused) resolve(Buffer.concat(chunks, size));
    });
    req.on('error', reject);
    // The connection went before the body ended (a parser error, the request timeout, a reset):
    // settle, so the handler does not wait forever for an 'end' that will not come.
    req.on('close', () => {
      if (!req.complete) reject(new ApiError(400, 'the request body ended early', 'invalid_request_error', null, 'incomplete_body'));
    });
  });
}

/**
 * 415 unless the body is declared as JSON. Browsers send `text/plain` and form types
 * cross-site without a CORS preflight; requiring application/json makes every such
 * request a preflighted one, which only the origins given to --cors-origins pass.
 */
export function requireJson(req: IncomingMessage): void {
  const given = req.headers['content-type'];
  const type = (given ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new ApiError(
      415,
      `the request body must be JSON sent with 'Content-Type: application/json'; got ${given === undefined ? 'no Content-Type' : `'${given.slice(0, 80)}'`}`,
      'invalid_request_error',
      null,
      'unsupported_media_type',
    );
  }
}

/** Parses a JSON object body; anything else (bad JSON, an array, a number) is a 400. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new ApiError(
      400,
      `We could not parse the JSON body of your request (${(err as Error).message}). ` +
        'The request body must be a JSON object; check that it is valid JSON.',
      'invalid_request_error',
      null,
      'invalid_json',
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ApiError(400, 'The request body must be a JSON object.', 'invalid_request_error', null, 'invalid_json');
  }
  return value as Record<string, unknown>;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

/**
 * Server-sent events, as the OpenAI and Workers AI streams frame them: each
 * event is one `data: <json>` line and a blank line; the stream ends with
 * `data: [DONE]`. Writes after the client left are dropped (the generation is
 * being cancelled by then).
 */
export class SseWriter {
  constructor(private readonly res: ServerResponse) {}

  /** Sends the 200 and the headers at once, so the client sees the stream open before the first token. */
  open(): void {
    // No Connection header of our own: Node's choice honours a client's `Connection: close`
    // (an explicit keep-alive here would override it and hold the socket open after [DONE]).
    this.res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      // Reverse proxies (nginx) would otherwise buffer the stream.
      'X-Accel-Buffering': 'no',
    });
    this.res.flushHeaders();
  }

  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }

  send(data: unknown): void {
    if (!this.closed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Ends the stream: `data: [DONE]` after a normal end, nothing more after an error event. */
  end(withDone = true): void {
    if (this.closed) return;
    if (withDone) this.res.write('data: [DONE]\n\n');
    this.res.end();
  }
}
