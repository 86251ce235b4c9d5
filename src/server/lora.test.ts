/**
 * One base model, several LoRA adapters, over HTTP: on /v1 an adapter is a model name
 * (listed by /v1/models with its parent), on /ai/run the `lora` field names one. Expected
 * texts come from the Generator run directly under the same adapter, and each adapter's
 * answer must not depend on which adapter ran before it.
 */
import OpenAI from 'openai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BUNDLED_MODEL_DIR, Generator } from '../generator.ts';
import { loadConfig } from '../model/config.ts';
import { allModules, writePeftAdapter } from '../model/lora.testing.ts';
import { validateSamplingParams } from '../sampling/params.ts';
import { freshSeed } from '../util/testing.ts';
import { startServer, type RunningServer } from './server.ts';
import { ModelNames } from './models.ts';

const seed = freshSeed();
const tag = `(test seed ${seed})`;
const root = mkdtempSync(join(tmpdir(), 'lora-server-'));
const config = await loadConfig(BUNDLED_MODEL_DIR);

let gen: Generator;
let srv: RunningServer;
let client: OpenAI;

beforeAll(async () => {
  await writePeftAdapter(join(root, 'poet'), config, {
    seed,
    config: { r: 8, lora_alpha: 32, target_modules: ['q_proj', 'v_proj', 'down_proj'] },
    modules: allModules(config, 8, ['q_proj', 'v_proj', 'down_proj']),
  });
  await writePeftAdapter(join(root, 'sql'), config, {
    seed: seed + 1,
    config: { r: 4, lora_alpha: 16, use_rslora: true, target_modules: 'all-linear' },
    modules: allModules(config, 4),
    dtype: 'F16',
  });
  gen = await Generator.load({ lora: [{ name: 'poet', dir: join(root, 'poet') }, { name: 'SQL-v2', dir: join(root, 'sql') }] });
  srv = await startServer({ generator: gen, port: 0, log: () => {} });
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 120_000);

afterAll(async () => {
  await srv?.close();
  gen?.close();
  rmSync(root, { recursive: true, force: true });
});

const PROMPT = 'The three primary colours are';
const PARAMS = { temperature: 0, max_tokens: 12 };

/** The library's own answer under `adapter`: what the server must reproduce. */
async function direct(adapter: string | undefined): Promise<string> {
  let text = '';
  for await (const ev of gen.generate(gen.encodeRaw(PROMPT), validateSamplingParams(PARAMS), undefined, { adapter })) {
    if (ev.type === 'text') text += ev.text;
  }
  return text;
}

function post(path: string, body: unknown): Promise<Response> {
  return fetch(srv.url + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

describe('LoRA adapters over HTTP', () => {
  it('/v1/models lists the base model names, then each adapter with its parent', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m);
    const names = ids.map((m) => m.id);
    expect(names[0]).toBe(gen.modelName);
    expect(names.slice(-2)).toEqual(['poet', 'SQL-v2']);
    expect(ids.at(-1)).toMatchObject({ id: 'SQL-v2', object: 'model', parent: gen.modelName, root: 'SQL-v2' });
    expect(ids[0]).not.toHaveProperty('parent');
    expect(await client.models.retrieve('sql-v2')).toMatchObject({ id: 'SQL-v2', parent: gen.modelName });
  });

  it('a model name picks the adapter on /v1/completions; back to back, each gives its own answer, as alone', async () => {
    const expected = { base: await direct(undefined), poet: await direct('poet'), sql: await direct('SQL-v2') };
    expect(new Set(Object.values(expected)).size, `three different answers ${tag}`).toBe(3);
    for (const [model, want] of [
      ['poet', expected.poet],
      ['SQL-v2', expected.sql],
      [gen.modelName, expected.base],
      ['poet', expected.poet],
      ['openchat_3.5', expected.base],
      ['sql-v2', expected.sql],
    ] as const) {
      const r = await client.completions.create({ model, prompt: PROMPT, ...PARAMS });
      expect(r.choices[0]!.text, `${model} ${tag}`).toBe(want);
      expect(r.model).toBe(model);
    }
  });

  it('concurrently, requests under different adapters (and none) each give their answer alone: a batched step serves one adapter at a time', async () => {
    const expected = { base: await direct(undefined), poet: await direct('poet'), sql: await direct('SQL-v2') };
    const models = ['poet', gen.modelName, 'SQL-v2', 'poet', 'SQL-v2', gen.modelName, 'poet', 'SQL-v2'];
    const want = (m: string) => (m === 'poet' ? expected.poet : m === 'SQL-v2' ? expected.sql : expected.base);
    const steps: (string | undefined)[] = [];
    const step = gen.model.step.bind(gen.model);
    const spy = vi.spyOn(gen.model, 'step').mockImplementation((batch, kind, adapter) => {
      steps.push(adapter?.name);
      return step(batch, kind, adapter);
    });
    try {
      const answers = await Promise.all(models.map((model) => client.completions.create({ model, prompt: PROMPT, ...PARAMS })));
      answers.forEach((r, i) => expect(r.choices[0]!.text, `${models[i]} ${tag}`).toBe(want(models[i]!)));
    } finally {
      spy.mockRestore();
    }
    // Steps ran under each adapter and under none, never mixing them (model.step takes one).
    expect(new Set(steps).size, `${tag} ${steps.join(',')}`).toBe(3);
  });

  it('chat completions run under the adapter the model name gives', async () => {
    const messages = [{ role: 'user' as const, content: 'Say hi.' }];
    const ids = gen.encodeChat(messages);
    let want = '';
    for await (const ev of gen.generate(ids, validateSamplingParams(PARAMS), undefined, { adapter: 'poet' })) if (ev.type === 'text') want += ev.text;
    const r = await client.chat.completions.create({ model: 'poet', messages, ...PARAMS });
    expect(r.choices[0]!.message.content, tag).toBe(want);
  });

  it('/ai/run: the lora field names the adapter, streaming or not', async () => {
    const want = await direct('SQL-v2');
    const res = await post(`/ai/run/@cf/openchat/openchat-3.5-0106`, { prompt: PROMPT, raw: true, lora: 'SQL-v2', ...PARAMS });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { result: { response: string } }).result.response, tag).toBe(want);
    const base = await post(`/ai/run/@cf/openchat/openchat-3.5-0106`, { prompt: PROMPT, raw: true, ...PARAMS });
    expect(((await base.json()) as { result: { response: string } }).result.response, tag).toBe(await direct(undefined));
    const stream = await post(`/ai/run/@cf/openchat/openchat-3.5-0106`, { prompt: PROMPT, raw: true, lora: 'poet', stream: true, ...PARAMS });
    const text = (await stream.text())
      .split('\n')
      .filter((l) => l.startsWith('data: {'))
      .map((l) => (JSON.parse(l.slice(6)) as { response: string }).response)
      .join('');
    expect(text, tag).toBe(await direct('poet'));
  });

  it('an adapter nobody loaded: 404 model_not_found on /v1, 400 in Cloudflare\'s shape on /ai/run', async () => {
    const v1 = await post('/v1/completions', { model: 'nope', prompt: 'x' });
    expect(v1.status).toBe(404);
    expect(await v1.json()).toMatchObject({ error: { param: 'model', code: 'model_not_found' } });
    const cf = await post('/ai/run/@cf/openchat/openchat-3.5-0106', { prompt: 'x', lora: 'nope' });
    expect(cf.status).toBe(400);
    const body = (await cf.json()) as { success: boolean; result: null; errors: { message: string }[] };
    expect(body.success).toBe(false);
    expect(body.errors[0]!.message).toMatch(/lora: no LoRA adapter named "nope" is loaded; loaded: poet, SQL-v2/);
    const inPath = await post('/ai/run/poet', { prompt: 'x' });
    expect(inPath.status).toBe(400);
    expect(((await inPath.json()) as { errors: { message: string }[] }).errors[0]!.message).toMatch(/poet is a LoRA adapter: on \/ai\/run the path names the base model .* and the lora field the adapter/);
    const wrongType = await post('/ai/run/@cf/openchat/openchat-3.5-0106', { prompt: 'x', lora: 3 });
    expect(wrongType.status).toBe(400);
    expect(((await wrongType.json()) as { errors: { message: string }[] }).errors[0]!.message).toMatch(/lora/);
  });

  it('the Generator refuses an adapter it did not load, before queueing', async () => {
    const run = gen.generate(gen.encodeRaw('x'), validateSamplingParams(PARAMS), undefined, { adapter: 'poet2' });
    await expect(run.next()).rejects.toThrow(/no LoRA adapter named "poet2" is loaded; loaded: poet, SQL-v2/);
  });

  it('an adapter name that is already a model name is refused at start-up', async () => {
    expect(() => new ModelNames('tiny-mistral', [], ['openchat_3.5'])).toThrow(/'openchat_3\.5' is already a name of the base model/);
    expect(() => new ModelNames('tiny-mistral', [], ['a', 'A'])).toThrow(/'A' is already a name of the base model or of another adapter/);
  });
});
