/**
 * Operating the server, in-process on the bundled tiny model with one LoRA adapter: GET /metrics
 * read back by a Prometheus text parser (and by the Prometheus project's Python parser where it
 * is installed) after a mixed workload, each counter against what the requests got; drain() (what
 * SIGTERM runs in `openchat serve`) and its timeout; API keys from files and the environment.
 * The signals themselves, on a real `openchat serve`, are in cli/serve-ops.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_MODEL_DIR, Generator } from '../generator.ts';
import { loadConfig } from '../model/config.ts';
import { allModules, writePeftAdapter } from '../model/lora.testing.ts';
import { ApiKeys, KeyError, keyFileWarning, parseKeyFile, parseKeyList } from './keys.ts';
import { ChatStream, httpRequest, waitUntil } from './ops.testing.ts';
import { parsePrometheus, parseWithPython, samplesOf, valueOf, type Family } from './prometheus.testing.ts';
import { startServer, type RunningServer } from './server.ts';

const root = mkdtempSync(join(tmpdir(), 'ops-'));
const KEY = `sk-ops-${randomBytes(8).toString('hex')}`;
// Words that must never show up in the metrics (no label may carry request text).
const SECRET_WORDS = 'zebrafinch quasarmelon';

let gen: Generator;
let srv: RunningServer;
const logs: string[] = [];
const auth = { Authorization: `Bearer ${KEY}` };

beforeAll(async () => {
  const config = await loadConfig(BUNDLED_MODEL_DIR);
  await writePeftAdapter(join(root, 'poet'), config, {
    seed: 7,
    config: { r: 4, lora_alpha: 8, target_modules: ['q_proj'] },
    modules: allModules(config, 4, ['q_proj']),
  });
  gen = await Generator.load({ lora: [{ name: 'poet', dir: join(root, 'poet') }] });
  srv = await startServer({ generator: gen, port: 0, apiKeys: [KEY], log: (l) => logs.push(l) });
}, 120_000);

afterAll(async () => {
  await srv?.close();
  gen?.close();
  rmSync(root, { recursive: true, force: true });
});

async function scrape(url = srv.url): Promise<{ text: string; families: Family[] }> {
  const res = await httpRequest(`${url}/metrics`, { headers: auth });
  expect(res.status, res.body).toBe(200);
  return { text: res.body, families: parsePrometheus(res.body) };
}

/** `after - before` for every sample, keyed by name and labels (nonzero ones only). */
function deltas(before: Family[], after: Family[]): Map<string, number> {
  const key = (s: { name: string; labels: Record<string, string> }) => `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
  const was = new Map(samplesOf(before).map((s) => [key(s), s.value]));
  const out = new Map<string, number>();
  for (const s of samplesOf(after)) {
    const d = s.value - (was.get(key(s)) ?? 0);
    if (d !== 0) out.set(key(s), d);
  }
  return out;
}

/** The log line of the last request to `path` logged since `from`. */
function lastLog(from: number, pattern: RegExp): string {
  const line = logs.slice(from).findLast((l) => pattern.test(l));
  if (!line) throw new Error(`no log line matching ${pattern} in:\n${logs.slice(from).join('\n')}`);
  return line;
}

const field = (line: string, name: string) => Number(new RegExp(`${name}=(\\d+)`).exec(line)?.[1] ?? NaN);

type Usage = { prompt_tokens: number; completion_tokens: number };

describe('GET /metrics', () => {
  it('needs the key unless metricsPublic; Prometheus text; the gauges at rest; model and adapters as labels', async () => {
    expect((await httpRequest(`${srv.url}/metrics`)).status).toBe(401);
    const wrong = await httpRequest(`${srv.url}/metrics`, { headers: { Authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    expect(JSON.parse(wrong.body).error.code).toBe('invalid_api_key');
    const res = await httpRequest(`${srv.url}/metrics`, { headers: auth });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);

    const pub = await startServer({ generator: gen, port: 0, apiKeys: [KEY], metricsPublic: true, logRequests: false });
    try {
      expect((await httpRequest(`${pub.url}/metrics`)).status).toBe(200);
      expect((await httpRequest(`${pub.url}/metrics`, { method: 'POST', body: {} })).status).toBe(405);
      // The other endpoints still need the key.
      expect((await httpRequest(`${pub.url}/v1/models`)).status).toBe(401);
    } finally {
      await pub.close();
    }

    const families = parsePrometheus(res.body);
    const model = { model_name: gen.modelName };
    expect(valueOf(families, 'vllm:num_requests_running', model)).toBe(0);
    expect(valueOf(families, 'vllm:num_requests_waiting', model)).toBe(0);
    expect(valueOf(families, 'vllm:kv_cache_usage_perc', model)).toBe(0);
    expect(valueOf(families, 'openchat:kv_cache_regions', model)).toBe(gen.maxBatch);
    expect(valueOf(families, 'openchat:draining', model)).toBe(0);
    expect(valueOf(families, 'openchat:api_keys', model)).toBe(1);
    expect(valueOf(families, 'openchat:model_info', { ...model, context_length: String(gen.contextLength) })).toBe(1);
    expect(valueOf(families, 'openchat:lora_adapter_info', { ...model, adapter: 'poet' })).toBe(1);
    expect(valueOf(families, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    for (const f of families) {
      expect(f.help, f.name).not.toBe('');
      for (const s of f.samples) expect(s.labels['model_name'], s.name).toBe(gen.modelName);
    }
    expect(families.find((f) => f.name === 'vllm:time_to_first_token_seconds')?.type).toBe('histogram');
    expect(families.find((f) => f.name === 'vllm:prompt_tokens_total')?.type).toBe('counter');
  });

  it('after a mixed workload every counter agrees with what the requests got, and Python’s prometheus_client reads the same', async () => {
    const before = (await scrape()).families;
    const from = logs.length;
    const ok: Array<{ usage: Usage; choices: number; finishes: string[]; ms: number; adapter: string }> = [];
    const timed = async (path: string, body: Record<string, unknown>, headers: Record<string, string> = auth) => {
      const t0 = performance.now();
      const res = await httpRequest(srv.url + path, { body, headers });
      return { res, ms: performance.now() - t0, json: res.status === 200 ? (JSON.parse(res.body) as Record<string, unknown>) : null };
    };
    type Chat = { usage: Usage; choices: Array<{ message?: { content: string }; finish_reason: string }> };

    // A chat's first turn, and its second, which reuses the first's keys from the KV cache.
    const turn1 = [{ role: 'user', content: `${SECRET_WORDS} one` }];
    const a = await timed('/v1/chat/completions', { model: 'openchat_3.5', messages: turn1, max_tokens: 6, temperature: 0 });
    expect(a.res.status, a.res.body).toBe(200);
    const ca = a.json as unknown as Chat;
    ok.push({ usage: ca.usage, choices: 1, finishes: [ca.choices[0]!.finish_reason], ms: a.ms, adapter: '' });
    const turn2 = [...turn1, { role: 'assistant', content: ca.choices[0]!.message!.content }, { role: 'user', content: 'and two' }];
    const b = await timed('/v1/chat/completions', { model: 'openchat_3.5', messages: turn2, max_tokens: 5, temperature: 0 });
    expect(b.res.status, b.res.body).toBe(200);
    const cb = b.json as unknown as Chat;
    ok.push({ usage: cb.usage, choices: 1, finishes: [cb.choices[0]!.finish_reason], ms: b.ms, adapter: '' });
    const turn2Line = lastLog(from, / POST \/v1\/chat\/completions 200 /);
    const turn2Cached = field(turn2Line, 'cached_tokens');
    // Every token of the first turn's prompt is still in the cache (its last one may be recomputed).
    expect(turn2Cached, turn2Line).toBeGreaterThanOrEqual(ca.usage.prompt_tokens - 1);
    expect(turn2Cached).toBeLessThan(cb.usage.prompt_tokens);

    // A stream, completions with n = 2, Workers AI, and the adapter.
    const stream = await new ChatStream(`${srv.url}/v1/chat/completions`, { model: 'openchat_3.5', messages: [{ role: 'user', content: 'stream' }], max_tokens: 5, temperature: 0 }, auth).result;
    expect(stream.done).toBe(true);
    ok.push({ usage: stream.usage!, choices: 1, finishes: [stream.finishReason!], ms: stream.totalMs, adapter: '' });
    const c = await timed('/v1/completions', { model: 'openchat_3.5', prompt: 'Once upon', max_tokens: 4, n: 2, seed: 11 });
    expect(c.res.status, c.res.body).toBe(200);
    const cc = c.json as unknown as { usage: Usage; choices: Array<{ finish_reason: string }> };
    ok.push({ usage: cc.usage, choices: 2, finishes: cc.choices.map((x) => x.finish_reason), ms: c.ms, adapter: '' });
    const w = await timed('/ai/run/@cf/openchat/openchat-3.5-0106', { prompt: 'hello', max_tokens: 3, temperature: 0 });
    expect(w.res.status, w.res.body).toBe(200);
    const wu = (w.json as { result: { usage: Usage } }).result.usage;
    const wLine = lastLog(from, / POST \/ai\/run\/\S+ 200 /);
    ok.push({ usage: wu, choices: 1, finishes: [/finish=(\w+)/.exec(wLine)![1]!], ms: w.ms, adapter: '' });
    const p = await timed('/v1/chat/completions', { model: 'poet', messages: [{ role: 'user', content: 'verse' }], max_tokens: 4, temperature: 0 });
    expect(p.res.status, p.res.body).toBe(200);
    const cp = p.json as unknown as Chat;
    ok.push({ usage: cp.usage, choices: 1, finishes: [cp.choices[0]!.finish_reason], ms: p.ms, adapter: 'poet' });

    // Refusals: 400, 404, 401, 405; and a health check.
    expect((await timed('/v1/chat/completions', { model: 'openchat_3.5', messages: turn1, temperature: 9 })).res.status).toBe(400);
    expect((await timed('/v1/chat/completions', { model: 'gpt-9', messages: turn1 })).res.status).toBe(404);
    expect((await timed('/v1/chat/completions', { model: 'openchat_3.5', messages: turn1 }, {})).res.status).toBe(401);
    expect((await httpRequest(`${srv.url}/v1/chat/completions`, { headers: auth })).status).toBe(405);
    expect((await httpRequest(`${srv.url}/health`)).status).toBe(200);

    // A stream the client leaves after its first text.
    const leave = new AbortController();
    const left = new ChatStream(`${srv.url}/v1/chat/completions`, { model: 'openchat_3.5', messages: [{ role: 'user', content: 'long' }], max_tokens: 500, temperature: 0 }, auth, leave.signal);
    await left.firstContent;
    leave.abort();
    await left.result;
    await waitUntil('the aborted request to be logged', () => logs.slice(from).some((l) => l.includes(' 499 ')));
    const abortLine = lastLog(from, / 499 /);
    const aborted = { prompt: field(abortLine, 'prompt_tokens'), completion: field(abortLine, 'completion_tokens'), cached: field(abortLine, 'cached_tokens') };
    expect(aborted.completion).toBeGreaterThanOrEqual(1);
    expect(aborted.completion).toBeLessThan(500);

    const { text, families: after } = await scrape();
    const d = deltas(before, after);
    const get = (name: string, labels: Record<string, string> = {}) =>
      [...d].filter(([k]) => k.startsWith(name + '[') && Object.entries(labels).every(([l, v]) => k.includes(JSON.stringify([l, v])))).reduce((s, [, v]) => s + v, 0);

    // Requests by endpoint, method and status: exactly those sent (the scrape before counts; this one not yet).
    const http = [...d].filter(([k]) => k.startsWith('openchat:http_requests_total[')).map(([k, v]) => {
      const labels = Object.fromEntries(JSON.parse(k.slice(k.indexOf('['))) as [string, string][]);
      return `${labels['method']} ${labels['endpoint']} ${labels['status']} x${v}`;
    });
    expect(http.sort()).toEqual(
      [
        'POST /v1/chat/completions 200 x4',
        'POST /v1/chat/completions 400 x1',
        'POST /v1/chat/completions 404 x1',
        'POST /v1/chat/completions 401 x1',
        'GET /v1/chat/completions 405 x1',
        'POST /v1/chat/completions 499 x1',
        'POST /v1/completions 200 x1',
        'POST /ai/run 200 x1',
        'GET /health 200 x1',
        'GET /metrics 200 x1',
      ].sort(),
    );
    expect(get('openchat:requests_aborted_total', { endpoint: '/v1/chat/completions' })).toBe(1);

    // Tokens: every request that reached the model (the aborted one too), by adapter.
    const sum = (f: (r: (typeof ok)[number]) => number, adapter?: string) => ok.filter((r) => adapter === undefined || r.adapter === adapter).reduce((s, r) => s + f(r), 0);
    expect(get('vllm:prompt_tokens_total', { adapter: '' })).toBe(sum((r) => r.usage.prompt_tokens, '') + aborted.prompt);
    expect(get('vllm:prompt_tokens_total', { adapter: 'poet' })).toBe(sum((r) => r.usage.prompt_tokens, 'poet'));
    expect(get('vllm:generation_tokens_total', { adapter: '' })).toBe(sum((r) => r.usage.completion_tokens, '') + aborted.completion);
    expect(get('vllm:generation_tokens_total', { adapter: 'poet' })).toBe(sum((r) => r.usage.completion_tokens, 'poet'));
    for (const reason of ['stop', 'length']) {
      expect(get('vllm:request_success_total', { finished_reason: reason }), reason).toBe(ok.flatMap((r) => r.finishes).filter((f) => f === reason).length);
    }
    expect(get('vllm:request_success_total', { finished_reason: 'abort' })).toBe(1);

    // The prefix cache: every prompt token is a query; the hits are what each request's log line says it reused.
    expect(get('vllm:prefix_cache_queries_total')).toBe(get('vllm:prompt_tokens_total'));
    const cachedLogged = logs.slice(from).filter((l) => / (200|499) prompt_tokens=/.test(l)).reduce((s, l) => s + field(l, 'cached_tokens'), 0);
    expect(get('vllm:prefix_cache_hits_total')).toBe(cachedLogged);
    expect(get('vllm:prefix_cache_hits_total')).toBeGreaterThanOrEqual(turn2Cached);

    // Histograms: one observation per request (TTFT and queue time: all that reached the model;
    // end-to-end: those answered whole), one per gap between a choice's tokens.
    expect(get('vllm:time_to_first_token_seconds_count')).toBe(ok.length + 1);
    expect(get('vllm:request_queue_time_seconds_count')).toBe(ok.length + 1);
    expect(get('vllm:e2e_request_latency_seconds_count')).toBe(ok.length);
    expect(get('vllm:inter_token_latency_seconds_count')).toBe(sum((r) => r.usage.completion_tokens - r.choices) + aborted.completion - 1);
    // The server's end-to-end time is inside the client's.
    const e2e = get('vllm:e2e_request_latency_seconds_sum');
    expect(e2e).toBeGreaterThan(0);
    expect(e2e).toBeLessThanOrEqual(sum((r) => r.ms) / 1000);
    expect(get('vllm:time_to_first_token_seconds_sum')).toBeGreaterThan(0);
    expect(get('vllm:inter_token_latency_seconds_sum')).toBeGreaterThan(0);

    // At rest again; and nothing a client sent is in the text.
    expect(valueOf(after, 'vllm:num_requests_running')).toBe(0);
    expect(valueOf(after, 'vllm:kv_cache_usage_perc')).toBe(0);
    for (const word of [...SECRET_WORDS.split(' '), KEY, 'gpt-9']) expect(text).not.toContain(word);

    const python = parseWithPython(text);
    if ('missing' in python) {
      console.warn(`metrics: the cross-check with the official Python parser is skipped: ${python.missing}`);
    } else {
      const norm = (samples: { name: string; labels: Record<string, string>; value: number }[]) =>
        samples.map((s) => `${s.name}${JSON.stringify(Object.entries(s.labels).sort())} ${s.value}`).sort();
      expect(norm(python.samples)).toEqual(norm(samplesOf(after)));
    }
  });

  it('two conversations taking turns on one server each keep their own prefix (the scheduler does not evict one for the template both share)', async () => {
    const from = logs.length;
    const chat = async (messages: Array<{ role: string; content: string }>) => {
      const res = await httpRequest(`${srv.url}/v1/chat/completions`, { body: { model: 'openchat_3.5', messages, max_tokens: 4, temperature: 0 }, headers: auth });
      expect(res.status, res.body).toBe(200);
      const j = JSON.parse(res.body) as { usage: { prompt_tokens: number }; choices: Array<{ message: { content: string } }> };
      return { prompt: j.usage.prompt_tokens, text: j.choices[0]!.message.content, cached: field(lastLog(from, / POST \/v1\/chat\/completions 200 /), 'cached_tokens') };
    };
    const a1m = [{ role: 'user', content: 'first conversation, about rivers and the sea' }];
    const b1m = [{ role: 'user', content: 'second conversation, about mountains' }];
    const a1 = await chat(a1m);
    const b1 = await chat(b1m);
    const a2 = await chat([...a1m, { role: 'assistant', content: a1.text }, { role: 'user', content: 'go on' }]);
    const b2 = await chat([...b1m, { role: 'assistant', content: b1.text }, { role: 'user', content: 'go on' }]);
    expect(a2.cached, 'A keeps its first turn').toBeGreaterThanOrEqual(a1.prompt - 1);
    expect(b2.cached, 'B keeps its first turn').toBeGreaterThanOrEqual(b1.prompt - 1);
  });

  it('while a stream runs: one request running, one KV-cache region of the pool in use; after, none', async () => {
    const leave = new AbortController();
    const s = new ChatStream(`${srv.url}/v1/chat/completions`, { model: 'openchat_3.5', messages: [{ role: 'user', content: 'gauges' }], max_tokens: 400, temperature: 0 }, auth, leave.signal);
    await s.firstContent;
    const during = (await scrape()).families;
    expect(valueOf(during, 'vllm:num_requests_running')).toBe(1);
    expect(valueOf(during, 'vllm:num_requests_waiting')).toBe(0);
    expect(valueOf(during, 'vllm:kv_cache_usage_perc')).toBeCloseTo(1 / gen.maxBatch, 10);
    leave.abort();
    await s.result;
    await waitUntil('the region to be freed', async () => valueOf((await scrape()).families, 'vllm:kv_cache_usage_perc') === 0);
    expect(valueOf((await scrape()).families, 'vllm:num_requests_running')).toBe(0);
  });
});

describe('drain (what SIGTERM does)', () => {
  const body = (n: number) => ({ model: 'openchat_3.5', messages: [{ role: 'user', content: `drain ${n}` }], max_tokens: 40, temperature: 0 });

  it('running answers finish whole; new requests get 503 server_shutting_down with Retry-After; /health 503 draining; /metrics still answers', async () => {
    const s = await startServer({ generator: gen, port: 0, logRequests: false, replicaName: 'd1' });
    try {
      const want = await Promise.all([0, 1].map(async (n) => JSON.parse((await httpRequest(`${s.url}/v1/chat/completions`, { body: body(n) })).body).choices[0].message.content as string));
      const streams = [0, 1].map((n) => new ChatStream(`${s.url}/v1/chat/completions`, body(n)));
      await Promise.all(streams.map((x) => x.firstContent));
      const drained = s.drain(20_000);
      expect(s.server.draining).toBe(true);

      const refused = await httpRequest(`${s.url}/v1/chat/completions`, { body: body(2) });
      expect(refused.status).toBe(503);
      expect(JSON.parse(refused.body).error).toMatchObject({ code: 'server_shutting_down', type: 'server_error' });
      expect(refused.headers['retry-after']).toBe('1');
      expect(refused.headers['connection']).toBe('close');
      expect(refused.headers['x-replica']).toBe('d1');
      const cf = await httpRequest(`${s.url}/ai/run/@cf/openchat/openchat-3.5-0106`, { body: { prompt: 'x' } });
      expect(cf.status).toBe(503);
      expect(JSON.parse(cf.body)).toMatchObject({ success: false, errors: [{ message: expect.stringMatching(/shutting down/) }] });
      const health = await httpRequest(`${s.url}/health`);
      expect(health.status).toBe(503);
      expect(JSON.parse(health.body).status).toBe('draining');
      const metrics = await httpRequest(`${s.url}/metrics`);
      expect(metrics.status).toBe(200);
      expect(valueOf(parsePrometheus(metrics.body), 'openchat:draining')).toBe(1);

      const results = await Promise.all(streams.map((x) => x.result));
      for (const [i, r] of results.entries()) {
        expect(r.done, `stream ${i}`).toBe(true);
        expect(r.text).toBe(want[i]);
        expect(r.finishReason).toMatch(/^(stop|length)$/);
      }
      expect(await drained).toBe(0);
    } finally {
      await s.close();
    }
  });

  it('past the drain timeout, what still runs is left to close(), which cancels it', async () => {
    const s = await startServer({ generator: gen, port: 0, logRequests: false });
    try {
      const long = new ChatStream(`${s.url}/v1/chat/completions`, { ...body(3), max_tokens: 900 });
      await long.firstContent;
      const t0 = performance.now();
      expect(await s.drain(300)).toBe(1);
      expect(performance.now() - t0).toBeLessThan(5_000);
      await s.close();
      const r = await long.result;
      expect(r.done).toBe(false);
      expect(r.finishReason).toBeNull();
    } finally {
      await s.close();
    }
  });
});

describe('API keys (keys.ts)', () => {
  it('a key file: comments, blank lines, CRLF; a malformed line is named by number, never shown; the mode is checked', async () => {
    expect(parseKeyFile('# keys\r\n\r\nk1\r\n  k2   # the ops team\n#k3\n', 'F')).toEqual(['k1', 'k2']);
    let err: unknown;
    try {
      parseKeyFile('ok\nsecret words here\n', '/etc/k');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KeyError);
    expect((err as Error).message).toBe("/etc/k line 2: a key cannot contain spaces (one key per line; '#' starts a comment)");
    const file = join(root, 'mode');
    writeFileSync(file, 'k\n');
    chmodSync(file, 0o644);
    expect(keyFileWarning(file)).toMatch(/can be read by other users \(mode 0644\); chmod 600/);
    chmodSync(file, 0o600);
    expect(keyFileWarning(file)).toBeNull();
  });

  it('OPENCHAT_API_KEYS: commas or whitespace; set but empty is refused rather than running open', async () => {
    expect(parseKeyList(' a,b  c\nd,, ')).toEqual(['a', 'b', 'c', 'd']);
    const keys = ApiKeys.load({ env: 'e1, e2', keys: ['flag'] });
    expect(keys.count).toBe(3);
    expect(['e1', 'e2', 'flag'].map((k) => keys.accepts(k))).toEqual([true, true, true]);
    expect(['e', 'e1 ', '', 'flag2'].map((k) => keys.accepts(k))).toEqual([false, false, false, false]);
    expect(() => ApiKeys.load({ env: ' , ' })).toThrow(/OPENCHAT_API_KEYS is set but holds no keys/);
    expect(ApiKeys.load({}).required).toBe(false);
  });

  it('reload: a new key works and a removed one is refused at once; a file gone or emptied keeps the keys it had', async () => {
    const file = join(root, 'keys');
    writeFileSync(file, 'old-key\n', { mode: 0o600 });
    const keys = ApiKeys.load({ file, env: 'env-key' });
    expect(() => ApiKeys.load({ file: join(root, 'none') })).toThrow(/cannot read the API key file .*none: ENOENT/);
    const s = await startServer({ generator: gen, port: 0, apiKeys: keys, logRequests: false });
    const status = async (key: string) => (await httpRequest(`${s.url}/v1/models`, { headers: { Authorization: `Bearer ${key}` } })).status;
    try {
      expect([await status('old-key'), await status('env-key'), await status('new-key')]).toEqual([200, 200, 401]);
      writeFileSync(file, '# rotated\nnew-key\n');
      expect(keys.reload()).toBe(2);
      expect([await status('old-key'), await status('env-key'), await status('new-key')]).toEqual([401, 200, 200]);
      writeFileSync(file, '# nothing\n');
      expect(() => keys.reload()).toThrow(/holds no keys/);
      rmSync(file);
      expect(() => keys.reload()).toThrow(/cannot read the API key file/);
      expect([await status('new-key'), await status('env-key')]).toEqual([200, 200]);
    } finally {
      await s.close();
    }
  });
});
