/**
 * The server, on loopback, on the bundled tiny model: through the official
 * `openai` client (what users run) and through raw fetch (SSE framing, error
 * bodies, Workers AI). Expected texts come from running the Generator directly
 * with the same prompt and parameters, so every check compares the server with
 * the library rather than with a recorded answer.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Generator } from '../generator.ts';
import { validateSamplingParams } from '../sampling/params.ts';
import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import { freshSeed } from '../util/testing.ts';
import { Rng } from '../util/rng.ts';
import { startServer, type RunningServer } from './server.ts';

const seed = freshSeed();
const rng = new Rng(seed);
const tag = `(test seed ${seed})`;

let gen: Generator;
let srv: RunningServer;
let client: OpenAI;
const logs: string[] = [];

beforeAll(async () => {
  gen = await Generator.load();
  srv = await startServer({ generator: gen, port: 0, log: (l) => logs.push(l) });
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await srv?.close();
  gen?.close();
});

/** The library's own answer: what the server must reproduce. */
async function direct(promptIds: number[], params: Record<string, unknown>): Promise<{ text: string; completion: number; finish: string }> {
  let text = '';
  for await (const ev of gen.generate(promptIds, validateSamplingParams(params))) {
    if (ev.type === 'text') text += ev.text;
    else return { text, completion: ev.usage.completion_tokens, finish: ev.finishReason };
  }
  throw new Error('no done event');
}

/**
 * A response body as JSON. `any` on purpose: the tests read fields of bodies whose shape is
 * what they check, and a schema type for every error and envelope would only restate them.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function jsonOf(res: Response): Promise<any> {
  return res.json();
}

function post(path: string, body: unknown, headers: Record<string, string> = {}, url = srv.url): Promise<Response> {
  return fetch(url + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Splits an SSE body into its `data:` payloads, checking the framing on the way. */
function sseEvents(raw: string): string[] {
  expect(raw.endsWith('\n\n'), 'every event ends with a blank line').toBe(true);
  const events = raw.slice(0, -2).split('\n\n');
  for (const e of events) expect(e.startsWith('data: ') && !e.includes('\n'), `event framing: ${JSON.stringify(e)}`).toBe(true);
  return events.map((e) => e.slice('data: '.length));
}

function randomWords(n: number): string {
  const words = ['tell', 'me', 'about', 'the', 'sea', 'a', 'story', 'why', 'is', 'sky', 'blue', 'code', 'über', 'naïve', '東京', '🙂'];
  return Array.from({ length: n }, () => words[rng.int(0, words.length)]).join(' ');
}

const randomSeed = () => rng.int(0, 2 ** 31);

describe('OpenAI endpoints through the openai client', () => {
  it('chat completion (non-streaming) matches the generator', async () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: randomWords(6) },
    ];
    const s = randomSeed();
    const res = await client.chat.completions.create({ model: gen.modelName, messages, max_tokens: 10, seed: s, temperature: 0.9 });
    const want = await direct(gen.encodeChat(messages), { max_tokens: 10, seed: s, temperature: 0.9 });
    expect(res.object).toBe('chat.completion');
    expect(res.id).toMatch(/^chatcmpl-/);
    expect(res.model).toBe(gen.modelName);
    expect(res.choices).toHaveLength(1);
    expect(res.choices[0]!.message.role).toBe('assistant');
    expect(res.choices[0]!.message.content, tag).toBe(want.text);
    expect(res.choices[0]!.finish_reason).toBe(want.finish);
    expect(res.usage).toEqual({
      prompt_tokens: gen.encodeChat(messages).length,
      completion_tokens: want.completion,
      total_tokens: gen.encodeChat(messages).length + want.completion,
    });
  });

  it('streaming chat: role first, text pieces, finish_reason, usage chunk; same text as non-streaming', async () => {
    const messages: ChatMessage[] = [{ role: 'user', content: randomWords(5) }];
    const s = randomSeed();
    const want = await direct(gen.encodeChat(messages), { max_tokens: 12, seed: s });
    const stream = await client.chat.completions.create({
      model: 'openchat_3.5',
      messages,
      max_tokens: 12,
      seed: s,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    for (const c of chunks) expect(c.object).toBe('chat.completion.chunk');
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text, tag).toBe(want.text);
    const finishes = chunks.filter((c) => c.choices[0]?.finish_reason);
    expect(finishes).toHaveLength(1);
    expect(finishes[0]!.choices[0]!.finish_reason).toBe(want.finish);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage?.completion_tokens).toBe(want.completion);
    expect(last.usage?.prompt_tokens).toBe(gen.encodeChat(messages).length);
  });

  it('n = 2 with a seed: choice i is the seed + i sample', async () => {
    const messages: ChatMessage[] = [{ role: 'user', content: randomWords(4) }];
    const s = randomSeed();
    const res = await client.chat.completions.create({ model: gen.modelName, messages, max_tokens: 6, seed: s, n: 2 });
    const ids = gen.encodeChat(messages);
    const want0 = await direct(ids, { max_tokens: 6, seed: s });
    const want1 = await direct(ids, { max_tokens: 6, seed: s + 1 });
    expect(res.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(res.choices[0]!.message.content, tag).toBe(want0.text);
    expect(res.choices[1]!.message.content, tag).toBe(want1.text);
    expect(res.usage!.completion_tokens).toBe(want0.completion + want1.completion);
    expect(res.usage!.prompt_tokens).toBe(ids.length);
  });

  it('n = 2 without a seed: one seed is drawn, choice i runs with it + i, and each reports its seed', async () => {
    const messages: ChatMessage[] = [{ role: 'user', content: randomWords(4) }];
    const res = await post('/v1/chat/completions', { model: gen.modelName, messages, max_tokens: 4, n: 2 });
    const json = await jsonOf(res);
    const [s0, s1] = json.choices.map((c: { seed: number }) => c.seed);
    expect(Number.isSafeInteger(s0)).toBe(true);
    expect(s1).toBe(s0 + 1);
    const ids = gen.encodeChat(messages);
    expect(json.choices[1].message.content, tag).toBe((await direct(ids, { max_tokens: 4, seed: s1 })).text);
  });

  it('condition "Code" switches the template', async () => {
    const messages: ChatMessage[] = [{ role: 'user', content: randomWords(4) }];
    // `condition` is OpenChat's extension: the client passes unknown fields through.
    const res = await client.chat.completions.create({ model: gen.modelName, messages, max_tokens: 2, condition: 'Code' } as never);
    const usage = (res as unknown as OpenAI.ChatCompletion).usage!;
    expect(usage.prompt_tokens).toBe(gen.encodeChat(messages, 'Code').length);
    expect(gen.encodeChat(messages, 'Code')).not.toEqual(gen.encodeChat(messages));
  });

  it('completions: raw prompt, no template', async () => {
    const prompt = randomWords(7);
    const s = randomSeed();
    const res = await client.completions.create({ model: 'openchat-3.5-0106', prompt, max_tokens: 8, seed: s, top_k: 40 } as never);
    const completion = res as unknown as OpenAI.Completion;
    const want = await direct(gen.encodeRaw(prompt), { max_tokens: 8, seed: s, top_k: 40 });
    expect(completion.object).toBe('text_completion');
    expect(completion.choices[0]!.text, tag).toBe(want.text);
    expect(completion.usage!.prompt_tokens).toBe(gen.encodeRaw(prompt).length);
  });

  it('streaming completions', async () => {
    const prompt = randomWords(3);
    const s = randomSeed();
    const want = await direct(gen.encodeRaw(prompt), { max_tokens: 8, seed: s });
    const stream = await client.completions.create({ model: gen.modelName, prompt, max_tokens: 8, seed: s, stream: true });
    let text = '';
    let finish: string | null = null;
    for await (const c of stream) {
      text += c.choices[0]?.text ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(text, tag).toBe(want.text);
    expect(finish).toBe(want.finish);
  });

  it('models: the folder name first, then the aliases', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids[0]).toBe(gen.modelName);
    expect(ids).toContain('openchat_3.5');
    expect(ids).toContain('@cf/openchat/openchat-3.5-0106');
    const one = await client.models.retrieve('openchat_3.5');
    expect(one.id).toBe('openchat_3.5');
  });

  it('an error reaches the client as an APIError with status and code', async () => {
    const err = await client.chat.completions
      .create({ model: gen.modelName, messages: [{ role: 'user', content: 'x' }], temperature: 7 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.APIError>).param).toBe('temperature');
    const missing = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect((missing as InstanceType<typeof OpenAI.APIError>).code).toBe('model_not_found');
  });
});

describe('raw HTTP', () => {
  it('SSE framing: data lines, role first, finish chunk, [DONE] last', async () => {
    const res = await post('/v1/chat/completions', {
      model: gen.modelName,
      messages: [{ role: 'user', content: randomWords(3) }],
      max_tokens: 5,
      stream: true,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = sseEvents(await res.text());
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    expect(chunks.at(-1).choices[0].finish_reason).toMatch(/^(stop|length)$/);
    for (const c of chunks.slice(1, -1)) expect(typeof c.choices[0].delta.content).toBe('string');
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
  });

  const chat = (extra: Record<string, unknown>) => ({ model: 'openchat_3.5', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, ...extra });
  const cases: [string, string, unknown, number, string | null, string | null][] = [
    // name, path, body, status, param, code
    ['malformed JSON', '/v1/chat/completions', '{"model": ', 400, null, 'invalid_json'],
    ['a JSON array', '/v1/chat/completions', '[1, 2]', 400, null, 'invalid_json'],
    ['messages not an array', '/v1/chat/completions', chat({ messages: 'hi' }), 400, 'messages', 'invalid_type'],
    ['empty messages', '/v1/chat/completions', chat({ messages: [] }), 400, 'messages', 'empty_array'],
    ['bad role', '/v1/chat/completions', chat({ messages: [{ role: 'function', content: 'x' }] }), 400, 'messages[0].role', 'invalid_value'],
    ['content a number', '/v1/chat/completions', chat({ messages: [{ role: 'user', content: 5 }] }), 400, 'messages[0].content', 'invalid_type'],
    ['missing model', '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] }, 400, 'model', 'missing_required_parameter'],
    ['unknown model', '/v1/chat/completions', chat({ model: 'gpt-4' }), 404, 'model', 'model_not_found'],
    ['temperature out of range', '/v1/chat/completions', chat({ temperature: 2.5 }), 400, 'temperature', 'invalid_value'],
    ['temperature a string', '/v1/chat/completions', chat({ temperature: '0.7' }), 400, 'temperature', 'invalid_value'],
    ['top_p 0', '/v1/chat/completions', chat({ top_p: 0 }), 400, 'top_p', 'invalid_value'],
    ['n 5', '/v1/chat/completions', chat({ n: 5 }), 400, 'n', 'invalid_value'],
    ['17 stop strings', '/v1/chat/completions', chat({ stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }), 400, 'stop', 'invalid_value'],
    ['max_tokens 0', '/v1/chat/completions', chat({ max_tokens: 0 }), 400, 'max_tokens', 'invalid_value'],
    ['stream a string', '/v1/chat/completions', chat({ stream: 'yes' }), 400, 'stream', 'invalid_type'],
    ['bad condition', '/v1/chat/completions', chat({ condition: 'Math' }), 400, 'condition', 'invalid_value'],
    ['tools without a function', '/v1/chat/completions', chat({ tools: [{ type: 'function' }] }), 400, 'tools[0].function', 'invalid_type'],
    ['functions (the deprecated name)', '/v1/chat/completions', chat({ functions: [{ name: 'f' }] }), 400, 'functions', 'unsupported_parameter'],
    ['logit_bias an array', '/v1/chat/completions', chat({ logit_bias: [] }), 400, 'logit_bias', 'unsupported_parameter'],
    ['a text/plain body', '/v1/chat/completions', 'TEXT_PLAIN', 415, null, 'unsupported_media_type'],
    ['over the context', '/v1/chat/completions', chat({ max_tokens: 5000 }), 400, 'max_tokens', 'context_length_exceeded'],
    ['completions without prompt', '/v1/completions', { model: 'openchat_3.5' }, 400, 'prompt', 'missing_required_parameter'],
    ['unknown path', '/v1/engines', {}, 404, null, 'unknown_url'],
  ];
  it.each(cases)('%s -> OpenAI error body', async (_name, path, body, status, param, code) => {
    const res =
      body === 'TEXT_PLAIN' ? await post(path, JSON.stringify(chat({})), { 'Content-Type': 'text/plain' }) : await post(path, body);
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const json = await jsonOf(res);
    expect(Object.keys(json)).toEqual(['error']);
    expect(Object.keys(json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(json.error.param).toBe(param);
    expect(json.error.code).toBe(code);
    expect(json.error.type).toBe(status >= 400 && status < 500 ? 'invalid_request_error' : json.error.type);
    expect(json.error.message).not.toMatch(/\n\s+at /); // never a stack trace
  });

  it('the context error names the numbers', async () => {
    const res = await post('/v1/chat/completions', chat({ max_tokens: 5000 }));
    const json = await jsonOf(res);
    expect(json.error.message).toContain('5000');
    expect(json.error.message).toContain(String(gen.contextLength));
  });

  it('a body over the limit is a 413', async () => {
    const big = JSON.stringify(chat({ messages: [{ role: 'user', content: 'x'.repeat(1_100_000) }] }));
    const res = await post('/v1/chat/completions', big);
    expect(res.status).toBe(413);
    expect((await jsonOf(res)).error.code).toBe('request_too_large');
  });

  it('a chunked body (no Content-Length) is refused as soon as it passes the limit', async () => {
    const piece = new TextEncoder().encode('x'.repeat(64 * 1024));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // Far more than the limit: the server must answer without waiting for the end.
        if (sent++ < 256) controller.enqueue(piece);
        else controller.close();
      },
    });
    const res = await fetch(`${srv.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(413);
    expect((await jsonOf(res)).error.code).toBe('request_too_large');
  });

  it('wrong method is a 405 with Allow', async () => {
    const res = await fetch(`${srv.url}/v1/chat/completions`);
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
    expect((await jsonOf(res)).error.code).toBe('method_not_allowed');
  });

  it('health', async () => {
    const res = await fetch(`${srv.url}/health`);
    expect(await jsonOf(res)).toMatchObject({ status: 'ok', model: gen.modelName, active: 0 });
  });

  it('50 malformed requests leave the server healthy', async () => {
    const bodies: string[] = [];
    for (let i = 0; i < 50; i++) {
      const valid = JSON.stringify(chat({ temperature: rng.next() * 2 }));
      switch (i % 5) {
        case 0: // truncated JSON
          bodies.push(valid.slice(0, rng.int(0, valid.length - 1)));
          break;
        case 1: // random bytes
          bodies.push(Buffer.from(Array.from({ length: rng.int(1, 64) }, () => rng.int(0, 256))).toString('latin1'));
          break;
        case 2: // a field of the wrong type
          bodies.push(JSON.stringify(chat({ [['max_tokens', 'top_k', 'seed', 'stop', 'n'][rng.int(0, 5)]!]: { nested: true } })));
          break;
        case 3: // out of range
          bodies.push(JSON.stringify(chat({ top_k: -rng.int(1, 100), repetition_penalty: 100 })));
          break;
        default: // messages of the wrong shape
          bodies.push(JSON.stringify(chat({ messages: [rng.int(0, 9), null, 'x'].slice(0, rng.int(1, 4)) })));
      }
    }
    const results = await Promise.all(
      bodies.map(async (b) => {
        const res = await post(rng.next() < 0.5 ? '/v1/chat/completions' : '/v1/completions', b);
        return { status: res.status, json: await jsonOf(res) };
      }),
    );
    for (const r of results) {
      expect(r.status, `${tag} ${JSON.stringify(r.json)}`).toBeGreaterThanOrEqual(400);
      expect(r.status, `${tag} ${JSON.stringify(r.json)}`).toBeLessThan(500);
      expect(typeof r.json.error.message).toBe('string');
    }
    expect(await jsonOf(await fetch(`${srv.url}/health`))).toMatchObject({ status: 'ok', active: 0 });
    const ok = await client.chat.completions.create({ model: gen.modelName, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 });
    expect(ok.choices[0]!.finish_reason).toMatch(/^(stop|length)$/);
  });
});

describe('Workers AI schema', () => {
  const path = '/ai/run/@cf/openchat/openchat-3.5-0106';

  it('prompt: chat template, Workers AI defaults (temperature 0.6), result envelope', async () => {
    const prompt = randomWords(5);
    const s = randomSeed();
    const res = await post(path, { prompt, max_tokens: 8, seed: s });
    expect(res.status).toBe(200);
    const json = await jsonOf(res);
    const ids = gen.encodeChat([{ role: 'user', content: prompt }]);
    const want = await direct(ids, { max_tokens: 8, seed: s, temperature: 0.6 });
    expect(json).toEqual({
      result: { response: want.text, usage: { prompt_tokens: ids.length, completion_tokens: want.completion, total_tokens: ids.length + want.completion } },
      success: true,
      errors: [],
      messages: [],
    });
  });

  it('raw prompt and messages; the model name URL-encoded under a Cloudflare account path', async () => {
    const prompt = randomWords(4);
    const s = randomSeed();
    const raw = await jsonOf(await post(`/client/v4/accounts/abc123/ai/run/${encodeURIComponent('@cf/openchat/openchat-3.5-0106')}`, { prompt, raw: true, max_tokens: 6, seed: s }));
    expect(raw.result.response, tag).toBe((await direct(gen.encodeRaw(prompt), { max_tokens: 6, seed: s, temperature: 0.6 })).text);
    const messages: ChatMessage[] = [{ role: 'system', content: 'sys' }, { role: 'user', content: prompt }];
    const chatRes = await jsonOf(await post(path, { messages, max_tokens: 6, seed: s, temperature: 0 }));
    expect(chatRes.result.response, tag).toBe((await direct(gen.encodeChat(messages), { max_tokens: 6, temperature: 0 })).text);
  });

  it('stream: {"response"} events, then usage, then [DONE]', async () => {
    const prompt = randomWords(4);
    const s = randomSeed();
    const res = await post(path, { prompt, max_tokens: 8, seed: s, stream: true });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = sseEvents(await res.text());
    expect(events.at(-1)).toBe('[DONE]');
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e));
    for (const p of parsed) expect(typeof p.response).toBe('string');
    const want = await direct(gen.encodeChat([{ role: 'user', content: prompt }]), { max_tokens: 8, seed: s, temperature: 0.6 });
    expect(parsed.map((p) => p.response).join(''), tag).toBe(want.text);
    expect(parsed.at(-1).usage.completion_tokens).toBe(want.completion);
  });

  it('errors in the Cloudflare envelope', async () => {
    const both = await post(path, { prompt: 'a', messages: [{ role: 'user', content: 'b' }] });
    expect(both.status).toBe(400);
    const json = await jsonOf(both);
    expect(json.success).toBe(false);
    expect(json.result).toBe(null);
    expect(json.errors[0].message).toMatch(/exactly one of prompt or messages/);
    expect(typeof json.errors[0].code).toBe('number');
    const range = await post(path, { prompt: 'a', top_k: 5000 });
    expect(range.status).toBe(400);
    expect((await jsonOf(range)).errors[0].message).toMatch(/top_k/);
    const noModel = await post('/ai/run/@cf/meta/llama-3-8b-instruct', { prompt: 'a' });
    expect(noModel.status).toBe(404);
    expect((await jsonOf(noModel)).success).toBe(false);
  });
});

describe('load', () => {
  /** Reads an SSE chat stream over fetch into its text. */
  async function streamChat(content: string, s: number, maxTokens: number): Promise<string> {
    const res = await post('/v1/chat/completions', { model: gen.modelName, messages: [{ role: 'user', content }], max_tokens: maxTokens, seed: s, stream: true });
    const events = sseEvents(await res.text());
    expect(events.at(-1)).toBe('[DONE]');
    return events
      .slice(0, -1)
      .map((e) => JSON.parse(e).choices[0]?.delta.content ?? '')
      .join('');
  }

  it('eight concurrent streams all complete, each with the text it gets alone', async () => {
    const jobs = Array.from({ length: 8 }, () => ({ content: randomWords(rng.int(1, 8)), seed: randomSeed() }));
    const alone: string[] = [];
    for (const j of jobs) alone.push(await streamChat(j.content, j.seed, 10));
    const together = await Promise.all(jobs.map((j) => streamChat(j.content, j.seed, 10)));
    expect(together, tag).toEqual(alone);
    expect(new Set(alone).size, `${tag} different prompts and seeds give different texts`).toBeGreaterThan(1);
    expect(await jsonOf(await fetch(`${srv.url}/health`))).toMatchObject({ active: 0, queued: 0 });
  });

  /** Starts a long stream and resolves once its first data event has arrived. */
  async function startLongStream(url: string, controller: AbortController): Promise<void> {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: gen.modelName, messages: [{ role: 'user', content: 'long' }], max_tokens: 900, stream: true }),
      signal: controller.signal,
    });
    // Read until generated text has arrived (the role chunk comes before any token).
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let seen = '';
    while (!seen.includes('"delta":{"content":')) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the stream ended early: ${seen}`);
      seen += decoder.decode(value, { stream: true });
    }
    expect(seen).toMatch(/^data: /);
  }

  async function waitFor(cond: () => Promise<boolean>, ms: number): Promise<void> {
    const deadline = performance.now() + ms;
    while (!(await cond())) {
      if (performance.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('under load each request gets what it gets alone: 8 requests of mixed prompts and lengths joining at different times, two streams aborted mid-stream, n = 3, logprobs, penalties, greedy', async () => {
    const request = (i: number) => ({
      model: gen.modelName,
      // Some prompts run past one prefill chunk (STEP_PREFILL_TOKENS), so their prefill interleaves with decoding.
      messages: [{ role: 'user', content: randomWords(i % 3 === 0 ? rng.int(60, 100) : rng.int(1, 8)) }],
      max_tokens: rng.int(3, 40),
      seed: randomSeed(),
      ...[{}, { temperature: 0 }, { top_k: 5, logprobs: true, top_logprobs: 2 }, { presence_penalty: 1.5, stop: ['e'] }, { n: 3, temperature: 1 }][i % 5],
    });
    const jobs = Array.from({ length: 8 }, (_, i) => request(i));
    const answer = async (body: Record<string, unknown>) => {
      const res = await post('/v1/chat/completions', body);
      const json = await jsonOf(res);
      expect(res.status, JSON.stringify(json)).toBe(200);
      return (json.choices as { message: { content: string }; finish_reason: string; logprobs: unknown }[]).map((c) => [c.message.content, c.finish_reason, c.logprobs]);
    };
    const alone: unknown[] = [];
    for (const j of jobs) alone.push(await answer(j));
    // Choice i of n = 3 is what seed + i gives alone.
    const nJob = jobs[4]!;
    for (let i = 0; i < 3; i++) expect((alone[4] as unknown[])[i], tag).toEqual((await answer({ ...nJob, n: 1, seed: nJob.seed + i }))[0]);

    const leaving = [new AbortController(), new AbortController()];
    await Promise.all(leaving.map((c) => startLongStream(srv.url, c)));
    const delays = jobs.map(() => rng.int(0, 300));
    const together = Promise.all(jobs.map(async (j, i) => {
      await new Promise((r) => setTimeout(r, delays[i]));
      return answer(j);
    }));
    setTimeout(() => leaving[0]!.abort(), 100);
    setTimeout(() => leaving[1]!.abort(), 250);
    let mostRunning = 0;
    let settled = false;
    void together.finally(() => (settled = true));
    while (!settled) {
      mostRunning = Math.max(mostRunning, (await jsonOf(await fetch(`${srv.url}/health`))).running);
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(await together, `${tag} delays ${delays}`).toEqual(alone);
    expect(mostRunning, 'requests really ran together').toBeGreaterThan(2);
    await waitFor(async () => (await jsonOf(await fetch(`${srv.url}/health`))).active === 0, 10_000);
    expect(await jsonOf(await fetch(`${srv.url}/health`))).toMatchObject({ active: 0, queued: 0, running: 0 });
  });

  it('a client that aborts mid-stream frees the server for the next request', async () => {
    const controller = new AbortController();
    await startLongStream(srv.url, controller);
    const logged = logs.length;
    controller.abort();
    const started = performance.now();
    const next = await client.chat.completions.create({ model: gen.modelName, messages: [{ role: 'user', content: 'next' }], max_tokens: 3 });
    expect(next.choices[0]!.finish_reason).toMatch(/^(stop|length)$/);
    // Had the long stream run on, the next request would have waited for up to 900 tokens.
    const cancelledLine = logs.slice(logged).find((l) => l.includes('cancelled'));
    expect(cancelledLine, logs.slice(logged).join('\n')).toBeDefined();
    const done = Number(/completion_tokens=(\d+)/.exec(cancelledLine!)?.[1] ?? 0);
    expect(done).toBeGreaterThanOrEqual(1);
    expect(done).toBeLessThan(900);
    expect(performance.now() - started).toBeLessThan(30_000);
  });

  it('beyond max-batch running and max-queue waiting, 503 with Retry-After; a queued client that leaves frees its slot; the queue drains', async () => {
    const small = await startServer({ generator: gen, port: 0, maxQueue: 1, logRequests: false });
    // Pace the real generator (20 ms per event) so the long stream surely outlasts every step
    // below however fast the machine runs the tiny model; cancellation still goes through it.
    const original = gen.generate.bind(gen);
    const paced = vi.spyOn(gen, 'generate').mockImplementation(async function* (...args: Parameters<typeof gen.generate>) {
      for await (const event of original(...args)) {
        await new Promise((r) => setTimeout(r, 20));
        yield event;
      }
    });
    try {
      // Fill the batch: maxBatch long streams run together.
      const batch = gen.maxBatch;
      const running = new AbortController();
      for (let i = 0; i < batch; i++) await startLongStream(small.url, running);
      const health = async () => (await jsonOf(await fetch(`${small.url}/health`))) as { active: number; queued: number; running: number };
      expect(await health()).toMatchObject({ active: batch, queued: 0, running: batch });
      const body = JSON.stringify(chat({ max_tokens: 2 }));
      const queuedClient = new AbortController();
      const queued = fetch(`${small.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body,
        signal: queuedClient.signal,
      }).catch((e: unknown) => e);
      await waitFor(async () => (await health()).active === batch + 1, 10_000);
      expect((await health()).queued).toBe(1);

      const refused = await post('/v1/chat/completions', body, {}, small.url);
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
      expect((await jsonOf(refused)).error.code).toBe('server_busy');

      // The queued client gives up: its slot is free while the long stream still runs.
      queuedClient.abort();
      expect(await queued).toBeInstanceOf(Error);
      await waitFor(async () => (await health()).active === batch, 10_000);
      expect((await health()).queued).toBe(0);
      const waiting = post('/v1/chat/completions', body, {}, small.url);
      await waitFor(async () => (await health()).active === batch + 1, 10_000);

      running.abort();
      const answered = await waiting;
      expect(answered.status).toBe(200);
      expect((await jsonOf(answered)).choices[0].finish_reason).toMatch(/^(stop|length)$/);
      await waitFor(async () => (await health()).active === 0, 10_000);
    } finally {
      paced.mockRestore();
      await small.close();
    }
  });

  const chat = (extra: Record<string, unknown>) => ({ model: gen.modelName, messages: [{ role: 'user', content: 'hi' }], ...extra });
});

describe('API keys', () => {
  it('401 invalid_api_key without a valid key, and no generation', async () => {
    const key = `sk-${rng.nextU32().toString(16)}`;
    const keyLogs: string[] = [];
    const secure = await startServer({ generator: gen, port: 0, apiKeys: ['sk-other', key], log: (l) => keyLogs.push(l) });
    const spy = vi.spyOn(gen, 'generate');
    try {
      const secret = `secret prompt ${rng.nextU32()}`;
      const body = { model: gen.modelName, messages: [{ role: 'user', content: secret }], max_tokens: 3 };
      for (const headers of [{}, { Authorization: 'Bearer sk-wrong' }, { Authorization: key }] as Record<string, string>[]) {
        const res = await post('/v1/chat/completions', body, headers, secure.url);
        expect(res.status).toBe(401);
        const json = await jsonOf(res);
        expect(json.error.code).toBe('invalid_api_key');
        expect(json.error.type).toBe('authentication_error');
      }
      expect((await fetch(`${secure.url}/v1/models`)).status).toBe(401);
      const cf = await post('/ai/run/openchat_3.5', { prompt: secret }, {}, secure.url);
      expect(cf.status).toBe(401);
      expect((await jsonOf(cf)).success).toBe(false);
      expect(spy).not.toHaveBeenCalled();

      const ok = new OpenAI({ baseURL: `${secure.url}/v1`, apiKey: key, maxRetries: 0 });
      const res = await ok.chat.completions.create({ model: gen.modelName, messages: [{ role: 'user', content: secret }], max_tokens: 3 });
      expect(res.choices).toHaveLength(1);
      expect(spy).toHaveBeenCalledTimes(1);
      // The log has a line per request, and never the prompt or a key.
      expect(keyLogs.length).toBeGreaterThanOrEqual(6);
      for (const line of keyLogs) {
        expect(line).not.toContain(secret);
        expect(line).not.toContain(key);
        expect(line).not.toContain('sk-wrong');
      }
      expect(keyLogs.some((l) => / POST \/v1\/chat\/completions 401 /.test(l))).toBe(true);
      expect(keyLogs.some((l) => / POST \/v1\/chat\/completions 200 prompt_tokens=\d+ completion_tokens=\d+ /.test(l))).toBe(true);
    } finally {
      spy.mockRestore();
      await secure.close();
    }
  });
});
