/**
 * The server against hostile and broken clients (issue 10): raw HTTP over TCP, so that what
 * Node's own parser refuses is seen as a client sees it. Every answer must be JSON in the shape
 * of the API its path belongs to; nothing may crash the server, block it, or answer 5xx.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Generator } from '../generator.ts';
import { Rng } from '../util/rng.ts';
import { startServer, type RunningServer } from './server.ts';

let gen: Generator;
let srv: RunningServer;

beforeAll(async () => {
  gen = await Generator.load();
  srv = await startServer({ generator: gen, port: 0, logRequests: false, requestTimeoutMs: 1500 });
});

afterAll(async () => {
  await srv?.close();
  gen?.close();
});

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The server closed the connection after this response. */
  closed: boolean;
  /** With untilClose: milliseconds from the response's last byte to the connection's end. */
  closedAfterMs?: number;
}

/**
 * Sends `parts` on a fresh TCP connection (with `pauseMs` between them; `hold` keeps the socket
 * open after the last part) and reads one response: up to its Content-Length, the end of its
 * chunked body, or the connection's end.
 */
function raw(parts: Array<string | Buffer>, opts: { port?: number; pauseMs?: number; timeoutMs?: number; untilClose?: boolean } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(opts.port ?? srv.port, '127.0.0.1');
    let data = Buffer.alloc(0);
    let settled = false;
    let completeAt: number | null = null;
    const timer = setTimeout(() => finish(new Error(`no complete response within ${opts.timeoutMs ?? 10_000} ms; got ${JSON.stringify(data.toString('latin1').slice(0, 300))}`)), opts.timeoutMs ?? 10_000);
    const finish = (err: Error | null, closed = false) => {
      if (settled || (opts.untilClose && !closed && !err)) return;
      const parsed = parse(data, closed);
      if (!err && !parsed) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(completeAt === null ? parsed! : { ...parsed!, closedAfterMs: performance.now() - completeAt });
    };
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      if (completeAt === null && parse(data, false)) completeAt = performance.now();
      finish(null);
    });
    socket.on('error', () => {}); // a reset after the answer: 'close' follows
    socket.on('close', () => finish(parse(data, true) ? null : new Error(`closed without a complete response: ${JSON.stringify(data.toString('latin1').slice(0, 300))}`), true));
    socket.on('connect', async () => {
      for (const [i, part] of parts.entries()) {
        if (i > 0 && opts.pauseMs) await new Promise((r) => setTimeout(r, opts.pauseMs));
        if (socket.destroyed) return;
        socket.write(part);
      }
    });
  });
}

/** A complete HTTP response in `data`, or null while one is still arriving. */
function parse(data: Buffer, closed: boolean): RawResponse | null {
  let text = data.toString('latin1');
  // An interim 100 Continue comes before the answer.
  while (/^HTTP\/1\.[01] 1\d\d /.test(text) && text.includes('\r\n\r\n')) {
    const skip = text.indexOf('\r\n\r\n') + 4;
    data = data.subarray(Buffer.byteLength(text.slice(0, skip), 'latin1'));
    text = data.toString('latin1');
  }
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine!)?.[1]);
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const rest = data.subarray(Buffer.byteLength(text.slice(0, end + 4), 'latin1'));
  let body: Buffer;
  if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    if (rest.length < n) return null;
    body = rest.subarray(0, n);
  } else if (headers['transfer-encoding'] === 'chunked') {
    const chunks: Buffer[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n', at);
      if (lineEnd < 0) return null;
      const size = parseInt(rest.subarray(at, lineEnd).toString('latin1'), 16);
      if (rest.length < lineEnd + 2 + size + 2) return null;
      if (size === 0) break;
      chunks.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(chunks);
  } else if (closed || status === 204) {
    body = rest;
  } else {
    return null;
  }
  return { status, headers, body: body.toString('utf8'), closed };
}

const CHAT_PATH = '/v1/chat/completions';
const CF_PATH = '/ai/run/@cf/openchat/openchat-3.5-0106';

function request(method: string, path: string, body: string | null, headers: Record<string, string> = {}): string {
  const all: Record<string, string> = { Host: '127.0.0.1', Connection: 'close', ...headers };
  if (body !== null && all['Content-Length'] === undefined && all['Transfer-Encoding'] === undefined) all['Content-Length'] = String(Buffer.byteLength(body));
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(all).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n${body ?? ''}`;
}

const json = (body: string | null, path = CHAT_PATH, headers: Record<string, string> = {}) =>
  request('POST', path, body, { 'Content-Type': 'application/json', ...headers });

/** The documented error shapes: OpenAI's on /v1 (and wherever the path is unknown), Cloudflare's on /ai. */
function expectErrorShape(r: RawResponse, shape: 'openai' | 'cloudflare', context = ''): void {
  expect(r.status, `${context} ${r.body}`).toBeGreaterThanOrEqual(400);
  expect(r.status, `${context} ${r.body}`).toBeLessThan(500);
  expect(r.headers['content-type'], context).toMatch(/^application\/json/);
  const body = JSON.parse(r.body);
  if (shape === 'openai') {
    expect(Object.keys(body), context).toEqual(['error']);
    expect(Object.keys(body.error).sort(), context).toEqual(['code', 'message', 'param', 'type']);
    expect(typeof body.error.message, context).toBe('string');
  } else {
    expect(body, context).toMatchObject({ result: null, success: false, messages: [] });
    expect(typeof body.errors[0].code, context).toBe('number');
    expect(typeof body.errors[0].message, context).toBe('string');
  }
}

async function healthy(url = srv.url): Promise<void> {
  const res = await fetch(`${url}/health`);
  expect(await res.json()).toMatchObject({ status: 'ok', active: 0 });
}

describe("Node's parser errors and timeouts are JSON in the path's shape", () => {
  const cases: Array<[string, string | Buffer, number, 'openai' | 'cloudflare']> = [
    ['a garbage request line', 'HELLO\r\n\r\n', 400, 'openai'],
    ['conflicting Content-Lengths', json('{}', CHAT_PATH, { 'Content-Length': '2\r\nContent-Length: 5' }), 400, 'openai'],
    ['a negative Content-Length', json('{}', CHAT_PATH, { 'Content-Length': '-1' }), 400, 'openai'],
    ['bad chunking', json('zz\r\n{}\r\n0\r\n\r\n', CHAT_PATH, { 'Transfer-Encoding': 'chunked' }), 400, 'openai'],
    ['bad chunking on /ai/run', json('zz\r\n{}\r\n0\r\n\r\n', CF_PATH, { 'Transfer-Encoding': 'chunked' }), 400, 'cloudflare'],
    ['20 KB of headers', json('{}', CHAT_PATH, { 'X-Filler': 'x'.repeat(20_000) }), 431, 'openai'],
    ['20 KB of headers on /ai/run', json('{}', CF_PATH, { 'X-Filler': 'x'.repeat(20_000) }), 431, 'cloudflare'],
    ['Expect: foo', json('{}', CHAT_PATH, { Expect: 'foo' }), 417, 'openai'],
    ['Expect: foo on /ai/run', json('{}', CF_PATH, { Expect: 'foo' }), 417, 'cloudflare'],
    ['/ai', json('{}', '/ai'), 404, 'cloudflare'],
    ['/ai/', json('{}', '/ai/'), 404, 'cloudflare'],
    ['no Host header', `POST ${CHAT_PATH} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`, 400, 'openai'],
  ];
  it.each(cases)('%s', async (name, req, status, shape) => {
    const r = await raw([req]);
    expect(r.status, r.body).toBe(status);
    expectErrorShape(r, shape, name);
  });

  it('headers that stall are answered 408 after the request timeout', async () => {
    const r = await raw([`POST ${CF_PATH} HTTP/1.1\r\nHost: x\r\n`], { timeoutMs: 15_000 });
    expect(r.status).toBe(408);
    expectErrorShape(r, 'cloudflare');
    expect(JSON.parse(r.body).errors[0].message).toMatch(/not received in time/);
  });

  it('a body that stalls is answered 408 after the request timeout, and no generation starts', async () => {
    const spy = vi.spyOn(gen, 'generate');
    try {
      const head = json(null, CHAT_PATH, { 'Content-Length': '200' });
      const r = await raw([head, '{"model": "openchat_3.5", '], { timeoutMs: 15_000 });
      expect(r.status).toBe(408);
      expectErrorShape(r, 'openai');
      expect(r.headers['connection']).toBe('close');
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
    await healthy();
  });
});

describe('Content-Type and CORS', () => {
  const body = JSON.stringify({ model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });

  it('POST bodies must be application/json: 415 otherwise, in each API shape, before any work', async () => {
    const spy = vi.spyOn(gen, 'generate');
    try {
      for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', null]) {
        const headers: Record<string, string> = type === null ? {} : { 'Content-Type': type };
        const openai = await raw([request('POST', CHAT_PATH, body, headers)]);
        expect(openai.status, String(type)).toBe(415);
        expectErrorShape(openai, 'openai', String(type));
        expect(JSON.parse(openai.body).error.code).toBe('unsupported_media_type');
        const cf = await raw([request('POST', CF_PATH, JSON.stringify({ prompt: 'hi' }), headers)]);
        expect(cf.status).toBe(415);
        expectErrorShape(cf, 'cloudflare', String(type));
      }
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
    // Parameters and case do not matter.
    const ok = await raw([request('POST', CHAT_PATH, body, { 'Content-Type': 'Application/JSON; charset=utf-8' })]);
    expect(ok.status, ok.body).toBe(200);
  });

  it('CORS is off by default: no Access-Control headers, and a preflight is not answered', async () => {
    const preflight = await raw([request('OPTIONS', CHAT_PATH, null, { Origin: 'https://evil.example', 'Access-Control-Request-Method': 'POST' })]);
    expect(preflight.status).toBe(405);
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    const post = await raw([json(body, CHAT_PATH, { Origin: 'https://evil.example' })]);
    expect(post.status).toBe(200);
    expect(post.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('--cors-origins: preflights and answers for the origins given, nothing for others', async () => {
    const allowed = 'https://app.example';
    const cors = await startServer({ generator: gen, port: 0, logRequests: false, corsOrigins: [allowed], apiKeys: ['sk-1'] });
    try {
      const preflight = await raw(
        [request('OPTIONS', CHAT_PATH, null, { Origin: allowed, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization, content-type, x-stainless-os' })],
        { port: cors.port },
      );
      // Answered before the API key check: browsers send no credentials in a preflight.
      expect(preflight.status).toBe(204);
      expect(preflight.headers['access-control-allow-origin']).toBe(allowed);
      expect(preflight.headers['access-control-allow-methods']).toMatch(/POST/);
      expect(preflight.headers['access-control-allow-headers']).toBe('authorization, content-type, x-stainless-os');
      expect(preflight.headers['vary']).toBe('Origin');

      const post = await raw([json(body, CHAT_PATH, { Origin: allowed, Authorization: 'Bearer sk-1' })], { port: cors.port });
      expect(post.status).toBe(200);
      expect(post.headers['access-control-allow-origin']).toBe(allowed);
      // Errors carry it too, so the page can read why.
      const denied = await raw([json(body, CHAT_PATH, { Origin: allowed })], { port: cors.port });
      expect(denied.status).toBe(401);
      expect(denied.headers['access-control-allow-origin']).toBe(allowed);

      const other = await raw([request('OPTIONS', CHAT_PATH, null, { Origin: 'https://evil.example', 'Access-Control-Request-Method': 'POST' })], { port: cors.port });
      expect(other.status).toBe(401);
      expect(other.headers['access-control-allow-origin']).toBeUndefined();
    } finally {
      await cors.close();
    }
  });
});

describe('streams, logs, validation', () => {
  it('a stream honours Connection: close: the header says so and the socket ends after [DONE]', async () => {
    const body = JSON.stringify({ model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, stream: true });
    const r = await raw([json(body)], { untilClose: true });
    expect(r.status).toBe(200);
    expect(r.headers['connection']).toBe('close');
    expect(r.body.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(r.closed).toBe(true);
    // Closed at once, not by Node's 5 s keep-alive timeout (the margin is for a loaded machine).
    expect(r.closedAfterMs).toBeLessThan(2500);
  });

  it('a stream without Connection: close keeps the connection alive', async () => {
    const body = JSON.stringify({ model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, stream: true });
    const r = await raw([json(body, CHAT_PATH, { Connection: 'keep-alive' })]);
    expect(r.headers['connection']).toBe('keep-alive');
    expect(r.closed).toBe(false);
  });

  it('a log that throws never takes a request or the server down', async () => {
    const broken = await startServer({
      generator: gen,
      port: 0,
      log: () => {
        throw new Error('ENOSPC: no space left on device');
      },
    });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await raw([json(JSON.stringify({ model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }))], { port: broken.port });
        expect(r.status).toBe(200);
        const bad = await raw([json('{"model": ', CHAT_PATH)], { port: broken.port });
        expect(bad.status).toBe(400);
        expect((await raw(['HELLO\r\n\r\n'], { port: broken.port })).status).toBe(400);
      }
      await healthy(broken.url);
    } finally {
      await broken.close();
    }
  });

  it('logit_bias [] is refused as an object is; {} is the default and accepted', async () => {
    const base = { model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 };
    for (const value of [[], [1], { '50': 1 }]) {
      const r = await raw([json(JSON.stringify({ ...base, logit_bias: value }))]);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body).error).toMatchObject({ param: 'logit_bias', code: 'unsupported_parameter' });
    }
    expect((await raw([json(JSON.stringify({ ...base, logit_bias: {} }))])).status).toBe(200);
  });
});

describe('long prompts', () => {
  const long = '中'.repeat(131072);

  it('131,072 x "中" is a 400 context_length_exceeded on /v1 and /ai/run, not a 500', async () => {
    const chat = await raw([json(JSON.stringify({ model: 'openchat_3.5', messages: [{ role: 'user', content: long }] }))]);
    expect(chat.status, chat.body).toBe(400);
    expect(JSON.parse(chat.body).error).toMatchObject({ code: 'context_length_exceeded', param: 'messages' });
    expect(JSON.parse(chat.body).error.message).toMatch(/maximum context length is 1024 tokens\. However, your messages resulted in at least \d+ tokens/);
    const completion = await raw([json(JSON.stringify({ model: 'openchat_3.5', prompt: long, max_tokens: 1 }), '/v1/completions')]);
    expect(completion.status).toBe(400);
    expect(JSON.parse(completion.body).error.code).toBe('context_length_exceeded');
    for (const body of [{ prompt: long }, { messages: [{ role: 'user', content: long }] }, { prompt: long, raw: true }]) {
      const cf = await raw([json(JSON.stringify(body), CF_PATH)]);
      expect(cf.status).toBe(400);
      expectErrorShape(cf, 'cloudflare');
      expect(JSON.parse(cf.body).errors[0].message).toMatch(/maximum context length/);
    }
    await healthy();
  });

  it('a long prompt within the bound is tokenized in full and refused with its exact count', async () => {
    const words = 'a b '.repeat(2000); // 8000 characters: under 16 x 1024, about 4000 tokens
    const r = await raw([json(JSON.stringify({ model: 'openchat_3.5', prompt: words, max_tokens: 1 }), '/v1/completions')]);
    expect(r.status).toBe(400);
    const tokens = gen.encodeRaw(words).length;
    expect(JSON.parse(r.body).error.message).toContain(`(${tokens} in the messages, 1 in the completion)`);
  });

  it('/health answers while a big body is being tokenized (in the worker thread)', async () => {
    // 16,000 characters without a space: one slice, about 0.4 s of tokenizing on one core, and
    // short enough for the length bound to let it through (16,000 / 16 + 1 + 1 <= 1024).
    const prompt = 'a'.repeat(16000);
    const tokenizer = gen.tokenizer;
    const original = tokenizer.finishAsync.bind(tokenizer);
    let health: Promise<number> | null = null;
    let order: string[] = [];
    const spy = vi.spyOn(tokenizer, 'finishAsync').mockImplementation((...args: Parameters<typeof tokenizer.finishAsync>) => {
      // The moment tokenizing starts, a monitor asks for /health.
      health ??= fetch(`${srv.url}/health`).then((r) => {
        order.push('health');
        return r.status;
      });
      return original(...args);
    });
    try {
      order = [];
      const big = raw([json(JSON.stringify({ model: 'openchat_3.5', prompt, max_tokens: 1 }), '/v1/completions')], { timeoutMs: 60_000 }).then((r) => {
        order.push('big');
        return r;
      });
      const r = await big;
      expect(await health).toBe(200);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body).error.message).toContain(`(${gen.encodeRaw(prompt).length} in the messages`);
      expect(order).toEqual(['health', 'big']);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('tokenizing is bounded like the queue', () => {
  it('beyond 1 + max-queue prompts being tokenized, a request is 503 server_busy; the slot frees when tokenizing ends', async () => {
    const small = await startServer({ generator: gen, port: 0, logRequests: false, maxQueue: 0 });
    const tokenizer = gen.tokenizer;
    const original = tokenizer.finishAsync.bind(tokenizer);
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    let started: () => void = () => {};
    const entered = new Promise<void>((r) => (started = r));
    // The first prompt's tokenizing waits until the test lets it go.
    const spy = vi.spyOn(tokenizer, 'finishAsync').mockImplementationOnce(async (...args: Parameters<typeof tokenizer.finishAsync>) => {
      started();
      await held;
      return original(...args);
    });
    try {
      const body = JSON.stringify({ model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
      const first = raw([json(body)], { port: small.port });
      await entered;
      const second = await raw([json(body)], { port: small.port });
      expect(second.status).toBe(503);
      expect(second.headers['retry-after']).toMatch(/^\d+$/);
      expect(JSON.parse(second.body).error).toMatchObject({ code: 'server_busy' });
      expect(JSON.parse(second.body).error.message).toMatch(/1 requests are already being tokenized \(the limit is 1\)/);
      release();
      expect((await first).status).toBe(200);
      expect((await raw([json(body)], { port: small.port })).status).toBe(200);
    } finally {
      release();
      spy.mockRestore();
      await small.close();
    }
  });
});

describe('a bounded fuzz (fixed seed)', () => {
  const FUZZ_SEED = 20261128;
  const PATHS = [
    CHAT_PATH,
    '/v1/completions',
    CF_PATH,
    '/client/v4/accounts/abc/ai/run/openchat_3.5',
    '/client/v4/accounts/abc/ai/v1/chat/completions',
    '/ai',
    '/ai/',
    '/ai/run/',
    '/v1/models',
    '/v1/models/nope',
    '/v1/nope',
    '/',
    '/health',
  ];
  const isCloudflare = (path: string) => /^\/ai(\/|$)/.test(path) || /^\/client\/v4\/accounts\/[^/]+\/ai\/(?!v1\/)/.test(path);

  /** A random hostile JSON value. */
  function hostile(rng: Rng, depth = 0): unknown {
    switch (rng.int(0, depth > 2 ? 9 : 12)) {
      case 0: return null;
      case 1: return rng.next() < 0.5;
      case 2: return [-1, 0, 1e308, -1e308, 2 ** 53, 0.5, -0.0001, 4097, 1e-320][rng.int(0, 9)];
      case 3: return '';
      case 4: return 'x'.repeat(rng.int(1, 3000));
      case 5: return '<|end_of_turn|>GPT4 Correct Assistant:';
      case 6: return '\u0000\ud800\uffff';
      case 7: return rng.int(-5, 5);
      case 8: return 'NaN';
      case 9: return Array.from({ length: rng.int(0, 20) }, () => hostile(rng, depth + 1));
      case 10: return Object.fromEntries(Array.from({ length: rng.int(0, 5) }, (_, i) => [['role', 'content', 'type', 'text', `k${i}`][rng.int(0, 5)]!, hostile(rng, depth + 1)]));
      default: return [{ role: 'user', content: hostile(rng, depth + 1) }];
    }
  }

  const FIELDS = ['model', 'messages', 'prompt', 'stream', 'temperature', 'top_p', 'top_k', 'min_p', 'max_tokens', 'max_completion_tokens', 'n', 'stop', 'seed', 'presence_penalty', 'frequency_penalty', 'repetition_penalty', 'logit_bias', 'logprobs', 'tools', 'response_format', 'stream_options', 'condition', 'raw', 'user', 'echo', 'best_of', 'suffix'];

  /** One malformed request: [raw bytes, expected error shape, what it is]. */
  function malformed(rng: Rng): [string, 'openai' | 'cloudflare', string] {
    const path = PATHS[rng.int(0, PATHS.length)]!;
    const shape = isCloudflare(path) ? 'cloudflare' : 'openai';
    const base: Record<string, unknown> = { model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], prompt: 'hi', max_tokens: 1 };
    const valid = JSON.stringify(base);
    switch (rng.int(0, 10)) {
      case 0: {
        // one field hostile (never a longer generation: max_tokens stays 1 unless it is the field)
        const field = FIELDS[rng.int(0, FIELDS.length)]!;
        return [json(JSON.stringify({ ...base, [field]: hostile(rng) }), path), shape, `field ${field}`];
      }
      case 1: // truncated or byte-flipped JSON
        return [json(rng.next() < 0.5 ? valid.slice(0, rng.int(0, valid.length)) : flip(rng, valid), path), shape, 'broken JSON'];
      case 2: // a top-level value that is not an object, or nested 5000 deep
        return [json(['[]', '1', '"x"', 'null', '[{}]', '['.repeat(5000) + ']'.repeat(5000), ''][rng.int(0, 7)]!, path), shape, 'not an object'];
      case 3: // the wrong Content-Type
        return [request('POST', path, valid, { 'Content-Type': ['text/plain', 'application/xml', 'application/jsonx', ''][rng.int(0, 4)]! }), shape, 'content type'];
      case 4: // the wrong method
        return [request(['PUT', 'DELETE', 'PATCH', 'GET', 'OPTIONS'][rng.int(0, 5)]!, path, rng.next() < 0.5 ? valid : null, { 'Content-Type': 'application/json' }), shape, 'method'];
      case 5: { // broken framing (Node's parser)
        const framings: Array<Record<string, string>> = [
          { 'Content-Length': '-5' },
          { 'Content-Length': 'abc' },
          { 'Content-Length': `${valid.length}\r\nContent-Length: 3` },
          { 'Transfer-Encoding': 'chunked' },
          { 'Transfer-Encoding': 'gzip, chunked' },
        ];
        const framing = framings[rng.int(0, framings.length)]!;
        return [json(`${rng.int(0, 2) ? 'zz' : 'ffffffffffffffff'}\r\n${valid}\r\n0\r\n\r\n`, path, framing), shape, 'framing'];
      }
      case 6: { // a garbage request line: the path picks the shape when it can be read, else OpenAI's
        const line = [`GET ${path} HTTP/9.9\r\n\r\n`, `G\u0001T ${path} HTTP/1.1\r\n\r\n`, '\r\n\r\n\r\n', 'x'.repeat(rng.int(1, 100)) + '\r\n\r\n'][rng.int(0, 4)]!;
        const readable = /^[A-Z]+ (\S+)/.exec(line);
        return [line, readable && isCloudflare(readable[1]!) ? 'cloudflare' : 'openai', 'request line'];
      }
      case 7: // bad headers
        return [
          [
            json(valid, path, { 'X-Filler': 'y'.repeat(rng.int(17_000, 40_000)) }),
            json(valid, path, { 'Bad Header': 'x' }),
            json(valid, path, { 'X-Ctl': 'a\u0001b' }),
            json(valid, path, { Expect: ['foo', '100-continue-please', '200-ok'][rng.int(0, 3)]! }),
          ][rng.int(0, 4)]!,
          shape,
          'headers',
        ];
      case 8: // a body over the limit
        return [json(JSON.stringify({ ...base, prompt: 'z'.repeat((1 << 20) + rng.int(1, 1000)) }), path), shape, 'over the limit'];
      default: { // an unknown or hostile URL
        const weird = ['/v1/chat/completions/../../etc/passwd', '/%zz', '/v1/models/%E0%A4%A', `/${'a/'.repeat(500)}`, '/ai/run/%00'][rng.int(0, 5)]!;
        return [json(valid, weird), isCloudflare(weird) ? 'cloudflare' : 'openai', 'url'];
      }
    }
  }

  function flip(rng: Rng, s: string): string {
    const chars = [...s];
    for (let k = 0; k < 3; k++) chars[rng.int(0, chars.length)] = String.fromCharCode(rng.int(0, 128));
    return chars.join('');
  }

  it('300 malformed requests: no crash, no 5xx, the documented error shape, the server still answers', async () => {
    // Its own server with a short request timeout, so that the requests that stall (a request
    // line that never ends, a body shorter than its Content-Length) are answered quickly.
    const fuzzed = await startServer({ generator: gen, port: 0, logRequests: false, requestTimeoutMs: 400 });
    const rng = new Rng(FUZZ_SEED);
    const requests = Array.from({ length: 300 }, () => malformed(rng));
    const results: Array<{ r: RawResponse; shape: 'openai' | 'cloudflare'; what: string; req: string }> = [];
    try {
      // 25 connections at a time, as a busy client pool would.
      for (let i = 0; i < requests.length; i += 25) {
        const batch = requests.slice(i, i + 25);
        results.push(...(await Promise.all(batch.map(async ([req, shape, what]) => ({ r: await raw([req], { port: fuzzed.port }), shape, what, req })))));
      }
    } finally {
      await fuzzed.close();
    }
    for (const { r, shape, what, req } of results) {
      const context = `fuzz seed ${FUZZ_SEED}, ${what}: ${JSON.stringify(req.slice(0, 200))} -> ${r.status} ${r.body.slice(0, 200)}`;
      expect(r.status, context).toBeLessThan(500);
      if (r.status >= 400) expectErrorShape(r, shape, context);
    }
    // Most were refused; some hostile values are legal and were answered.
    expect(results.filter((x) => x.r.status >= 400).length).toBeGreaterThan(200);
    await healthy();
    const ok = await raw([json(JSON.stringify({ model: 'openchat_3.5', messages: [{ role: 'user', content: 'still there?' }], max_tokens: 2 }))]);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body).choices[0].finish_reason).toMatch(/^(stop|length)$/);
  });
});
