/**
 * The hosted APIs' wider surface, on the bundled random-weight model: JSON mode
 * (response_format), tools, log-probabilities, and Workers AI's own ranges and fields.
 * Random weights are the point: whatever the model "wants", constrained output must parse
 * and validate.
 */
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BUNDLED_MODEL_DIR, Generator } from '../generator.ts';
import { validateSamplingParams } from '../sampling/params.ts';
import { invalidJson as validateJson } from '../sampling/grammar/validate.testing.ts';
import { PERSON_SCHEMA, PYDANTIC_ORDER_SCHEMA } from '../sampling/grammar/structured.testing.ts';
import { logSoftmax } from '../sampling/logprobs.testing.ts';
import { freshSeed } from '../util/testing.ts';
import { Rng } from '../util/rng.ts';
import { startServer, type RunningServer } from './server.ts';
import { checkResponseFormat, parseToolCalls, renderToolCalls } from './structured.ts';
import { UnsupportedVocabularyError } from '../sampling/grammar/constraint.ts';
import { ApiError } from './errors.ts';

const seed = freshSeed();
const rng = new Rng(seed);
const tag = `(test seed ${seed})`;
const randomSeed = () => rng.int(0, 2 ** 31);

let gen: Generator;
let srv: RunningServer;
let client: OpenAI;

beforeAll(async () => {
  gen = await Generator.load();
  srv = await startServer({ generator: gen, port: 0, logRequests: false });
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await srv?.close();
  gen?.close();
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- response bodies are what the tests inspect
async function jsonOf(res: Response): Promise<any> {
  return res.json();
}

function post(path: string, body: unknown): Promise<Response> {
  return fetch(srv.url + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

/** The `data:` payloads of an SSE body, [DONE] dropped. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed event payloads
function events(raw: string): any[] {
  return raw
    .split('\n\n')
    .filter((e) => e.startsWith('data: ') && e !== 'data: [DONE]')
    .map((e) => JSON.parse(e.slice('data: '.length)));
}

const MODEL = 'openchat-3.5-0106';
const WORKERS = '/ai/run/@cf/openchat/openchat-3.5-0106';

const WEATHER_TOOL = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, unit: { enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer' } },
      required: ['city', 'unit', 'days'],
      additionalProperties: false,
    },
  },
};
const TIME_TOOL = {
  type: 'function' as const,
  function: {
    name: 'get_time',
    parameters: { type: 'object', properties: { zone: { type: 'string' } }, required: ['zone'], additionalProperties: false },
  },
};

describe('response_format: JSON mode', () => {
  it('json_schema (strict) through the openai client: the answer parses and validates, streaming and not', async () => {
    for (let i = 0; i < 3; i++) {
      const s = randomSeed();
      const request = {
        model: MODEL,
        messages: [{ role: 'user' as const, content: 'Describe a person as JSON.' }],
        max_tokens: 40 + rng.int(0, 80),
        temperature: 1,
        seed: s,
        response_format: { type: 'json_schema' as const, json_schema: { name: 'person', schema: PERSON_SCHEMA, strict: true } },
      };
      const res = await client.chat.completions.create(request);
      const text = res.choices[0]!.message.content!;
      expect(validateJson(JSON.parse(text), PERSON_SCHEMA), `${tag} seed ${s}: ${text}`).toBeNull();
      expect(res.choices[0]!.finish_reason, `${tag} ${text}`).toBe('stop');

      const stream = await client.chat.completions.create({ ...request, stream: true });
      let streamed = '';
      for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? '';
      expect(streamed, `${tag} seed ${s}`).toBe(text);
    }
  });

  it('n = 2: every choice validates', async () => {
    const res = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'two people' }],
      max_tokens: 60,
      n: 2,
      seed: randomSeed(),
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON_SCHEMA } },
    });
    expect(res.choices.length).toBe(2);
    for (const c of res.choices) expect(validateJson(JSON.parse(c.message.content!), PERSON_SCHEMA), tag).toBeNull();
  });

  it('json_object: any JSON object', async () => {
    const res = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'JSON please' }],
      max_tokens: 60,
      seed: randomSeed(),
      response_format: { type: 'json_object' },
    });
    const value = JSON.parse(res.choices[0]!.message.content!);
    expect(typeof value === 'object' && value !== null && !Array.isArray(value), tag).toBe(true);
  });

  it('completions take response_format too; type "text" changes nothing', async () => {
    const s = randomSeed();
    const res = await client.completions.create({ model: MODEL, prompt: 'x =', max_tokens: 30, seed: s, response_format: { type: 'json_schema', json_schema: { name: 'p', schema: PERSON_SCHEMA } } } as never);
    expect(validateJson(JSON.parse(res.choices[0]!.text), PERSON_SCHEMA), tag).toBeNull();
    const plain = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, seed: s, response_format: { type: 'text' } });
    const without = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, seed: s });
    expect(plain.choices[0]!.message.content, tag).toBe(without.choices[0]!.message.content);
  });

  it('Workers AI: response_format with the schema itself or OpenAI\'s wrapper, streaming and not', async () => {
    for (const json_schema of [PERSON_SCHEMA, { name: 'person', schema: PERSON_SCHEMA }]) {
      const s = rng.int(1, 1e9);
      const body = { messages: [{ role: 'user', content: 'a person' }], max_tokens: 80, seed: s, response_format: { type: 'json_schema', json_schema } };
      const r = await jsonOf(await post(WORKERS, body));
      expect(r.success, JSON.stringify(r)).toBe(true);
      expect(validateJson(JSON.parse(r.result.response), PERSON_SCHEMA), `${tag} ${r.result.response}`).toBeNull();
      const streamed = events(await (await post(WORKERS, { ...body, stream: true })).text())
        .map((e) => e.response)
        .join('');
      expect(streamed, tag).toBe(r.result.response);
    }
    const obj = await jsonOf(await post(WORKERS, { prompt: 'json', max_tokens: 40, response_format: { type: 'json_object' } }));
    expect(typeof JSON.parse(obj.result.response), tag).toBe('object');
  });

  it('a max_tokens too small for any value ends at the limit with finish_reason length', async () => {
    const res = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'x' }],
      max_tokens: 3,
      response_format: { type: 'json_schema', json_schema: { name: 'p', schema: PERSON_SCHEMA } },
    });
    expect(res.choices[0]!.finish_reason).toBe('length');
  });
});

describe('the strict subset whole, and guided decoding as vLLM and llama.cpp take it', () => {
  it('a Pydantic-style schema (pattern, format, minimum, multipleOf, maxItems) through the openai client: valid, streaming and not', async () => {
    for (let i = 0; i < 2; i++) {
      const request = {
        model: MODEL,
        messages: [{ role: 'user' as const, content: 'An order as JSON.' }],
        max_tokens: 150 + rng.int(0, 60),
        seed: randomSeed(),
        response_format: { type: 'json_schema' as const, json_schema: { name: 'Order', schema: PYDANTIC_ORDER_SCHEMA, strict: true } },
      };
      const res = await client.chat.completions.create(request);
      const text = res.choices[0]!.message.content!;
      expect(res.choices[0]!.finish_reason, `${tag} ${text}`).toBe('stop');
      expect(validateJson(JSON.parse(text), PYDANTIC_ORDER_SCHEMA), `${tag} ${text}`).toBeNull();
      const stream = await client.chat.completions.create({ ...request, stream: true });
      let streamed = '';
      for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? '';
      expect(streamed, tag).toBe(text);
    }
  });

  it('guided_regex, guided_choice, structured_outputs.regex: the whole answer matches, on chat and completions', async () => {
    const pattern = '(\\d{3}-[A-Z]{2}|none)( é+)?';
    const full = new RegExp(`^(?:${pattern})$`, 'u');
    for (const [path, base] of [
      ['/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'code?' }] }],
      ['/v1/completions', { model: MODEL, prompt: 'code:' }],
    ] as const) {
      for (const field of [{ guided_regex: pattern }, { structured_outputs: { regex: pattern } }]) {
        const r = await jsonOf(await post(path, { ...base, ...field, max_tokens: 30, seed: randomSeed() }));
        const text = r.choices[0].message?.content ?? r.choices[0].text;
        expect(text, `${tag} ${path} ${JSON.stringify(r)}`).toMatch(full);
      }
      const choices = ['yes', 'no', 'maybe later', 'ja, gerne'];
      const c = await jsonOf(await post(path, { ...base, guided_choice: choices, max_tokens: 10, seed: randomSeed() }));
      expect(choices, tag).toContain(c.choices[0].message?.content ?? c.choices[0].text);
    }
  });

  it('guided_grammar and llama.cpp\'s grammar (GBNF), regular and nested: the answer is in the language', async () => {
    const list = 'root ::= "(" item ("," item)* ")"\nitem ::= [0-9]{1,3} | "x"';
    const listRe = /^\((\d{1,3}|x)(,(\d{1,3}|x))*\)$/;
    // Balanced brackets: not a regular language.
    const nested = 'root ::= pair+\npair ::= "[" pair* "]" | "(" pair* ")"';
    const balanced = (t: string) => {
      const stack: string[] = [];
      for (const ch of t) {
        if (ch === '[' || ch === '(') stack.push(ch);
        else if ((ch === ']' && stack.pop() !== '[') || (ch === ')' && stack.pop() !== '(')) return false;
      }
      return stack.length === 0 && t.length > 0 && /^[[\]()]+$/.test(t);
    };
    for (let i = 0; i < 3; i++) {
      const a = await jsonOf(await post('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'list' }], guided_grammar: list, max_tokens: 30, seed: randomSeed() }));
      expect(a.choices[0].message.content, `${tag} ${JSON.stringify(a)}`).toMatch(listRe);
      const b = await jsonOf(await post('/v1/completions', { model: MODEL, prompt: 'brackets:', grammar: nested, max_tokens: 30, seed: randomSeed() }));
      expect(balanced(b.choices[0].text), `${tag} ${JSON.stringify(b)}`).toBe(true);
      expect(b.choices[0].finish_reason, tag).toBe('stop');
    }
  });

  it('compiles off the event loop: /health answers while a slow pattern is still compiling (then refused for size)', async () => {
    // The subset construction of this pattern takes about a second before it passes the state limit.
    const slow = post('/v1/completions', { model: MODEL, prompt: 'x', guided_regex: '[ab]*a[ab]{16}', max_tokens: 4 }).then(async (r) => ({ status: r.status, at: performance.now(), body: await jsonOf(r) }));
    await new Promise((r) => setTimeout(r, 50));
    const health = await fetch(`${srv.url}/health`);
    const healthAt = performance.now();
    expect(health.status).toBe(200);
    const refused = await slow;
    expect(refused.status, JSON.stringify(refused.body)).toBe(400);
    expect(refused.body.error.message).toMatch(/states/);
    expect(healthAt, 'the health check waited for the compile').toBeLessThan(refused.at);
  });

  it('guided_json (a schema or its JSON text) and llama.cpp\'s json_schema and response_format {type: json_object, schema}', async () => {
    const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 10, maximum: 20 }, ok: { type: 'boolean' } }, required: ['n', 'ok'], additionalProperties: false };
    const fields = [{ guided_json: schema }, { guided_json: JSON.stringify(schema) }, { json_schema: schema }, { response_format: { type: 'json_object', schema } }, { structured_outputs: { json: schema } }];
    for (const field of fields) {
      const r = await jsonOf(await post('/v1/completions', { model: MODEL, prompt: 'n:', ...field, max_tokens: 30, seed: randomSeed() }));
      expect(validateJson(JSON.parse(r.choices[0].text), schema), `${tag} ${JSON.stringify(field)} ${JSON.stringify(r)}`).toBeNull();
    }
  });
});

describe('tools', () => {
  it('a required tool call: OpenAI\'s shape, arguments that validate, finish_reason tool_calls; streamed as a tool-call delta', async () => {
    for (let i = 0; i < 3; i++) {
      const s = randomSeed();
      const request = {
        model: MODEL,
        messages: [{ role: 'user' as const, content: 'Weather or time?' }],
        tools: [WEATHER_TOOL, TIME_TOOL],
        tool_choice: 'required' as const,
        max_tokens: 60,
        seed: s,
      };
      const res = await client.chat.completions.create(request);
      const choice = res.choices[0]!;
      expect(choice.finish_reason, tag).toBe('tool_calls');
      expect(choice.message.content).toBeNull();
      const calls = choice.message.tool_calls!;
      expect(calls.length, tag).toBeGreaterThan(0);
      for (const call of calls) {
        expect(call.type).toBe('function');
        expect(call.id).toMatch(/^call_/);
        if (call.type !== 'function') throw new Error('not a function call');
        const tool = [WEATHER_TOOL, TIME_TOOL].find((t) => t.function.name === call.function.name);
        expect(tool, `${tag} ${call.function.name}`).toBeDefined();
        expect(validateJson(JSON.parse(call.function.arguments), tool!.function.parameters), `${tag} ${call.function.arguments}`).toBeNull();
      }

      const stream = await client.chat.completions.create({ ...request, stream: true });
      const streamed: Array<{ name: string; args: string }> = [];
      let finish: string | null = null;
      for await (const chunk of stream) {
        const c = chunk.choices[0];
        for (const d of c?.delta.tool_calls ?? []) {
          streamed[d.index] ??= { name: '', args: '' };
          streamed[d.index]!.name += d.function?.name ?? '';
          streamed[d.index]!.args += d.function?.arguments ?? '';
        }
        finish = c?.finish_reason ?? finish;
      }
      const whole = calls.map((c) => (c.type === 'function' ? { name: c.function.name, args: c.function.arguments } : null));
      expect([streamed, finish], tag).toEqual([whole, 'tool_calls']);
    }
  });

  it('parallel_tool_calls: several calls in one answer, each under its own schema; false: exactly one', async () => {
    let several = 0;
    for (let i = 0; i < 3; i++) {
      const request = {
        model: MODEL,
        messages: [{ role: 'user' as const, content: 'Weather and time in Paris?' }],
        tools: [WEATHER_TOOL, TIME_TOOL],
        tool_choice: 'required' as const,
        max_tokens: 80,
        seed: randomSeed(),
      };
      const calls = (await client.chat.completions.create(request)).choices[0]!.message.tool_calls ?? [];
      if (calls.length > 1) several++;
      for (const call of calls) {
        if (call.type !== 'function') throw new Error('not a function call');
        const tool = [WEATHER_TOOL, TIME_TOOL].find((t) => t.function.name === call.function.name)!;
        expect(validateJson(JSON.parse(call.function.arguments), tool.function.parameters), `${tag} ${call.function.arguments}`).toBeNull();
      }
      const one = await client.chat.completions.create({ ...request, parallel_tool_calls: false });
      expect(one.choices[0]!.message.tool_calls?.length ?? 0, tag).toBeLessThanOrEqual(1);
      if (one.choices[0]!.finish_reason === 'tool_calls') expect(one.choices[0]!.message.tool_calls!.length).toBe(1);
    }
    // Random weights rarely open a second call; that the grammar served allows one (and only with
    // parallel_tool_calls) is checked on the server's own constraint, token by token.
    const functions = [WEATHER_TOOL, TIME_TOOL].map((t) => ({ name: t.function.name, parameters: t.function.parameters }));
    const firstCall = gen.tokenizer.encode('{"name": "get_time", "arguments": {"zone": "UTC"}}');
    const newline = gen.tokenizer.encode('\n').at(-1)!;
    const brace = gen.tokenizer.tokenBytes().findIndex((b) => b !== null && b.length === 1 && b[0] === 0x7b);
    for (const parallel of [true, false]) {
      const m = (await gen.grammar({ kind: 'tools', functions, parallel })).start();
      for (const id of firstCall) m.accept(id);
      expect(new Set(m.allowed(100)).has(gen.tokenizer.eotId!), `parallel ${parallel}`).toBe(true);
      m.accept(newline);
      expect(new Set(m.allowed(100)).has(brace), `parallel ${parallel}: "{" opens a second call`).toBe(parallel);
    }
    console.log(`parallel_tool_calls: ${several} of 3 random-weight answers made several calls ${tag}`);
  });

  it('a named tool_choice calls that function', async () => {
    const res = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'What time is it?' }],
      tools: [WEATHER_TOOL, TIME_TOOL],
      tool_choice: { type: 'function', function: { name: 'get_time' } },
      max_tokens: 40,
      seed: randomSeed(),
    });
    const call = res.choices[0]!.message.tool_calls![0]!;
    if (call.type !== 'function') throw new Error('not a function call');
    expect(call.function.name).toBe('get_time');
    expect(validateJson(JSON.parse(call.function.arguments), TIME_TOOL.function.parameters), tag).toBeNull();
  });

  it('auto: either text or a valid call, never a broken call', async () => {
    for (let i = 0; i < 4; i++) {
      const res = await client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'Weather in Paris?' }],
        tools: [WEATHER_TOOL],
        max_tokens: 60,
        seed: randomSeed(),
      });
      const c = res.choices[0]!;
      if (c.message.tool_calls?.length) {
        expect(c.finish_reason).toBe('tool_calls');
        const call = c.message.tool_calls[0]!;
        if (call.type !== 'function') throw new Error('not a function call');
        expect(validateJson(JSON.parse(call.function.arguments), WEATHER_TOOL.function.parameters), tag).toBeNull();
      } else {
        expect(c.message.content!.trimStart().startsWith('{'), `${tag} ${c.message.content}`).toBe(false);
      }
    }
  });

  it('round trip: the call and a tool message go back in a second request, rendered into the prompt as documented', async () => {
    const first = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Weather in Oslo?' }],
      tools: [WEATHER_TOOL],
      tool_choice: 'required',
      max_tokens: 60,
      seed: randomSeed(),
    });
    const message = first.choices[0]!.message;
    const call = message.tool_calls![0]!;
    if (call.type !== 'function') throw new Error('not a function call');
    const messages = [
      { role: 'user' as const, content: 'Weather in Oslo?' },
      { role: 'assistant' as const, content: message.content, tool_calls: message.tool_calls },
      { role: 'tool' as const, tool_call_id: call.id, content: '{"temperature": -3}' },
    ];
    const second = await client.chat.completions.create({ model: MODEL, messages, tools: [WEATHER_TOOL], max_tokens: 8, seed: 1 });
    expect(second.choices[0]!.finish_reason).not.toBeUndefined();
    const expected = gen.encodeChat([
      { role: 'user', content: 'Weather in Oslo?' },
      { role: 'assistant', content: JSON.stringify({ name: 'get_weather', arguments: JSON.parse(call.function.arguments) }) },
      { role: 'user', content: `Result of get_weather (call ${call.id}):\n{"temperature": -3}` },
      {
        role: 'system',
        content:
          'You can call these functions (each line: name, description, JSON schema of the arguments):\n' +
          JSON.stringify({ name: 'get_weather', description: WEATHER_TOOL.function.description, parameters: WEATHER_TOOL.function.parameters }) +
          '\nTo call a function, reply with nothing but JSON objects, one per line, each {"name": "<function name>", "arguments": {<arguments>}}; otherwise reply normally.',
      },
    ]);
    expect(second.usage!.prompt_tokens).toBe(expected.length);
  });

  it('a tool whose parameters use $defs and $ref (also "#", and properties named like keywords) is called with arguments that validate', async () => {
    const tree = {
      type: 'function' as const,
      function: {
        name: 'plant',
        parameters: {
          $defs: { leaf: { type: 'object', properties: { colour: { enum: ['green', 'red'] } }, required: ['colour'], additionalProperties: false } },
          type: 'object',
          properties: {
            leaves: { type: 'array', items: { $ref: '#/$defs/leaf' } },
            child: { anyOf: [{ type: 'null' }, { $ref: '#' }] },
            // Properties named like keywords are names, not keywords.
            const: { $ref: '#/$defs/leaf' },
            definitions: { type: 'integer' },
          },
          required: ['leaves', 'child', 'const', 'definitions'],
          additionalProperties: false,
        },
      },
    };
    for (let i = 0; i < 2; i++) {
      const res = await client.chat.completions.create({
        model: MODEL, messages: [{ role: 'user', content: 'grow' }], tools: [tree, TIME_TOOL], tool_choice: { type: 'function', function: { name: 'plant' } }, max_tokens: 120, seed: randomSeed(),
      });
      const call = res.choices[0]!.message.tool_calls![0]!;
      if (call.type !== 'function') throw new Error('not a function call');
      expect(validateJson(JSON.parse(call.function.arguments), tree.function.parameters), `${tag} ${call.function.arguments}`).toBeNull();
    }
  });

  it('reads calls back and renders them: unit cases', async () => {
    const plan = { tools: [{ name: 'f' }, { name: 'g' }], choice: 'auto' as const, parallel: true };
    expect(parseToolCalls(' {"name": "f", "arguments": {"a": 1}}\n', plan)).toMatchObject([{ name: 'f', arguments: '{"a":1}' }]);
    expect(parseToolCalls('{"name": "f", "arguments": {"s": "}{"}}\n{"name": "g", "arguments": {}}', plan)).toMatchObject([{ name: 'f', arguments: '{"s":"}{"}' }, { name: 'g', arguments: '{}' }]);
    expect(parseToolCalls('{"name": "f", "arguments": {}} {"name": "g", "arguments": {}}', { ...plan, parallel: false })).toBeNull(); // two calls, one allowed
    expect(parseToolCalls('{"name": "h", "arguments": {}}', plan)).toBeNull(); // not offered
    expect(parseToolCalls('{"name": "f", "argum', plan)).toBeNull(); // cut off by max_tokens
    expect(parseToolCalls('{"name": "f", "arguments": {}}\n{"name": "g", "argu', plan)).toBeNull(); // the second cut off
    expect(parseToolCalls('Sure: {"name": "f"}', plan)).toBeNull(); // text
    expect(renderToolCalls(' Let me check. ', [{ name: 'f', arguments: '{"a":1}' }, { name: 'g', arguments: 'not json' }])).toBe(
      'Let me check.\n{"name":"f","arguments":{"a":1}}\n{"name":"g","arguments":"not json"}',
    );
    // A vocabulary whose token texts are unknown: JSON mode is a 400, not a 500.
    const noVocab = { grammar: async () => { throw new UnsupportedVocabularyError('JSON mode needs a SentencePiece vocabulary'); } };
    let err: unknown;
    try {
      await checkResponseFormat({ type: 'json_object' }, noVocab);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
  });

  it('Workers AI: tool_calls [{name, arguments}] in the result, streaming and not', async () => {
    const tools = [{ name: 'get_time', description: 'time', parameters: TIME_TOOL.function.parameters }];
    const body = { messages: [{ role: 'user', content: 'time?' }], tools, tool_choice: 'required', max_tokens: 40, seed: rng.int(1, 1e9) };
    const r = await jsonOf(await post(WORKERS, body));
    expect(r.success, JSON.stringify(r)).toBe(true);
    const call = r.result.tool_calls[0];
    expect(call.name).toBe('get_time');
    expect(validateJson(call.arguments, TIME_TOOL.function.parameters), tag).toBeNull();
    const evs = events(await (await post(WORKERS, { ...body, stream: true })).text());
    expect(evs.find((e) => e.tool_calls)?.tool_calls, tag).toEqual(r.result.tool_calls);
  });
});

describe('logprobs', () => {
  const DIR = BUNDLED_MODEL_DIR;
  const golden = JSON.parse(readFileSync(DIR + 'golden.json', 'utf8')) as {
    cases: Array<{ id: string; input_ids: number[]; logits: { file: string } }>;
  };
  /** The golden tolerance (golden/golden.test.ts): 1e-5 of the logit range, about 1.5e-4 absolute. */
  const TOL = 2e-4;

  it('chat: the model\'s own log-softmax, matching Hugging Face\'s logits and the logits pass (openchat logits) at every position', async () => {
    const caseA = golden.cases.find((c) => c.id === 'a')!;
    const messages = [{ role: 'user' as const, content: 'Hello' }];
    expect(gen.encodeChat(messages)).toEqual(caseA.input_ids);
    // A temperature and penalties must not change the reported values.
    const params = { max_tokens: 12, seed: randomSeed(), temperature: 1.3, presence_penalty: 1 };
    const res = await client.chat.completions.create({ model: MODEL, messages, ...params, logprobs: true, top_logprobs: 20 });
    const content = res.choices[0]!.logprobs!.content!;
    expect(content.length).toBeGreaterThan(0);

    // The token ids behind the entries: the generator with the same seed.
    let ids: number[] = [];
    for await (const ev of gen.generate(caseA.input_ids, validateSamplingParams(params), undefined, { logprobs: { top: 20 } })) {
      if (ev.type === 'done') ids = ev.tokens.filter((t) => !gen.tokenizer.stopIds.includes(t));
    }
    expect(ids.length, tag).toBe(content.length);
    ids.forEach((id, i) => expect(content[i]!.bytes, `${tag} token ${i}`).toEqual([...gen.tokenBytes()[id]!]));

    // Position 0 against Hugging Face's own logits at the prompt's last position.
    const buf = readFileSync(DIR + caseA.logits.file);
    const hf = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    const hfLp = logSoftmax(hf.subarray((caseA.input_ids.length - 1) * 32002, caseA.input_ids.length * 32002));
    expect(Math.abs(content[0]!.logprob - hfLp[ids[0]!]!), tag).toBeLessThan(TOL);
    const sortedHf = [...hfLp].sort((a, b) => b - a).slice(0, 20);
    content[0]!.top_logprobs.forEach((alt, i) => expect(Math.abs(alt.logprob - sortedHf[i]!), `${tag} top ${i}`).toBeLessThan(TOL));

    // Every position against one logits pass over prompt + answer (what `openchat logits` prints).
    const seq = [...caseA.input_ids, ...ids];
    gen.model.reset();
    const all = (await gen.model.forward(seq, { kind: 'all-logits' })).logits!;
    content.forEach((c, i) => {
      const pos = caseA.input_ids.length - 1 + i;
      const lp = logSoftmax(all.subarray(pos * 32002, (pos + 1) * 32002));
      expect(Math.abs(c.logprob - lp[seq[pos + 1]!]!), `${tag} position ${i}`).toBeLessThan(TOL);
      const best = [...lp].sort((a, b) => b - a).slice(0, 20);
      expect(c.top_logprobs.length).toBe(20);
      c.top_logprobs.forEach((alt, k) => expect(Math.abs(alt.logprob - best[k]!), `${tag} position ${i} top ${k}`).toBeLessThan(TOL));
    });
    // The token bytes spell the answer (the decoder drops the first leading space).
    const text = new TextDecoder().decode(Uint8Array.from(content.flatMap((c) => c.bytes!)));
    expect(text.replace(/^ /, '')).toBe(res.choices[0]!.message.content);
  });

  it('greedy and top_k requests read log-probabilities from the device top-k and log-sum-exp: same values as the full row', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me something' }];
    const promptIds = gen.encodeChat(messages);
    for (const params of [{ temperature: 0 }, { temperature: 1, top_k: 5 }, { temperature: 0.7, top_k: 40 }]) {
      const s = randomSeed();
      const readouts: string[] = [];
      const step = gen.model.step.bind(gen.model);
      const spy = vi.spyOn(gen.model, 'step').mockImplementation((batch, kind) => {
        for (const { readout } of batch) {
          if (readout.kind !== 'none') readouts.push(readout.kind + (readout.kind === 'topk' && readout.logSumExp ? '+lse' : ''));
        }
        return step(batch, kind);
      });
      let res: unknown;
      try {
        res = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 10, seed: s, ...params, logprobs: true, top_logprobs: 8 } as never);
      } finally {
        spy.mockRestore();
      }
      expect(new Set(readouts), tag).toEqual(new Set(['topk+lse'])); // never the whole row
      const content = (res as OpenAI.ChatCompletion).choices[0]!.logprobs!.content!;
      // The same request without logprobs takes the same tokens (the readout does not change the draw).
      const plain = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 10, seed: s, ...params } as never);
      expect((plain as OpenAI.ChatCompletion).choices[0]!.message.content, tag).toBe((res as OpenAI.ChatCompletion).choices[0]!.message.content);

      let ids: number[] = [];
      for await (const ev of gen.generate(promptIds, validateSamplingParams({ max_tokens: 10, seed: s, ...params }))) {
        if (ev.type === 'done') ids = ev.tokens.filter((t) => !gen.tokenizer.stopIds.includes(t));
      }
      expect(ids.length, tag).toBe(content.length);
      const seq = [...promptIds, ...ids];
      gen.model.reset();
      const all = (await gen.model.forward(seq, { kind: 'all-logits' })).logits!;
      content.forEach((c, i) => {
        const pos = promptIds.length - 1 + i;
        const lp = logSoftmax(all.subarray(pos * 32002, (pos + 1) * 32002));
        expect(c.bytes, `${tag} ${JSON.stringify(params)} token ${i}`).toEqual([...gen.tokenBytes()[ids[i]!]!]);
        expect(Math.abs(c.logprob - lp[ids[i]!]!), `${tag} ${JSON.stringify(params)} position ${i}`).toBeLessThan(TOL);
        const best = [...lp].sort((a, b) => b - a).slice(0, 8);
        c.top_logprobs.forEach((alt, k) => expect(Math.abs(alt.logprob - best[k]!), `${tag} position ${i} top ${k}`).toBeLessThan(TOL));
      });
    }
  });

  it('chat streams carry the same entries', async () => {
    const s = randomSeed();
    const request = { model: MODEL, messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 10, seed: s, logprobs: true, top_logprobs: 2 };
    const whole = (await client.chat.completions.create(request)).choices[0]!.logprobs!.content!;
    const stream = await client.chat.completions.create({ ...request, stream: true });
    const streamed: unknown[] = [];
    for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
    expect(streamed, tag).toEqual(whole);
  });

  it('completions: the legacy layout (tokens, token_logprobs, top_logprobs, text_offset), streaming and not', async () => {
    const s = randomSeed();
    const request = { model: MODEL, prompt: 'Once upon a time', max_tokens: 10, seed: s, logprobs: 3 };
    const res = await client.completions.create(request);
    const lp = res.choices[0]!.logprobs!;
    expect(lp.tokens!.join(''), tag).toBe(res.choices[0]!.text);
    expect(lp.token_logprobs!.length).toBe(lp.tokens!.length);
    lp.top_logprobs!.forEach((top) => expect(Object.keys(top!).length).toBeLessThanOrEqual(3));
    let at = 0;
    lp.tokens!.forEach((t, i) => {
      expect(lp.text_offset![i]).toBe(at);
      at += t.length;
    });
    const stream = await client.completions.create({ ...request, stream: true });
    const tokens: string[] = [];
    const offsets: number[] = [];
    for await (const chunk of stream) {
      tokens.push(...(chunk.choices[0]?.logprobs?.tokens ?? []));
      offsets.push(...(chunk.choices[0]?.logprobs?.text_offset ?? []));
    }
    expect([tokens, offsets], tag).toEqual([lp.tokens, lp.text_offset]);
  });
});

describe('validation: every new field answers 400 with param', () => {
  const chat = (extra: object) => ({ model: MODEL, messages: [{ role: 'user', content: 'x' }], max_tokens: 2, ...extra });
  const cases: Array<[string, string, object, string, string | RegExp]> = [
    ['response_format not an object', '/v1/chat/completions', chat({ response_format: 'json' }), 'response_format', /object/],
    ['response_format bad type', '/v1/chat/completions', chat({ response_format: { type: 'yaml' } }), 'response_format.type', /json_schema/],
    ['json_schema missing', '/v1/chat/completions', chat({ response_format: { type: 'json_schema' } }), 'response_format.json_schema', /object/],
    ['schema keyword outside what can be enforced', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', uniqueItems: true } } } }), 'response_format.json_schema.schema', /uniqueItems/],
    ['a pattern with a look-ahead', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: '^(?=a)\\w+$' } } } }), 'response_format.json_schema.schema', /look-ahead/],
    ['a pattern with a back-reference', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: '(a)\\1' } } } }), 'response_format.json_schema.schema', /back-reference/],
    ['oneOf', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { oneOf: [{ type: 'string' }] } } } }), 'response_format.json_schema.schema', /oneOf.*anyOf/],
    ['an unknown format', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', format: 'credit-card' } } } }), 'response_format.json_schema.schema', /credit-card/],
    ['guided_regex with a look-behind', '/v1/chat/completions', chat({ guided_regex: '(?<=a)b' }), 'guided_regex', /look-behind/],
    ['guided_regex not a string', '/v1/completions', { model: MODEL, prompt: 'x', guided_regex: 3 }, 'guided_regex', /regular expression/],
    ['guided_choice empty', '/v1/chat/completions', chat({ guided_choice: [] }), 'guided_choice', /non-empty array/],
    ['guided_grammar with an undefined rule', '/v1/chat/completions', chat({ guided_grammar: 'root ::= item\n' }), 'guided_grammar', /item/],
    ['guided_grammar left-recursive', '/v1/completions', { model: MODEL, prompt: 'x', guided_grammar: 'root ::= root "a" | "a"' }, 'guided_grammar', /left-recursive/],
    ['grammar (llama.cpp) unterminated', '/v1/completions', { model: MODEL, prompt: 'x', grammar: 'root ::= "abc' }, 'grammar', /line 1/],
    ['json_schema (llama.cpp) not JSON', '/v1/completions', { model: MODEL, prompt: 'x', json_schema: 'nope' }, 'json_schema', /not JSON/],
    ['two kinds of structured output', '/v1/chat/completions', chat({ guided_regex: 'a', guided_choice: ['b'] }), 'guided_choice', /one kind/],
    ['guided and response_format', '/v1/chat/completions', chat({ guided_regex: 'a', response_format: { type: 'json_object' } }), 'guided_regex', /not both/],
    ['structured_outputs with an unknown field', '/v1/chat/completions', chat({ structured_outputs: { yaml: 'x' } }), 'structured_outputs.yaml', /not supported/],
    ['json_schema bad name', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'a b', schema: {} } } }), 'response_format.json_schema.name', /letters/],
    ['json_schema strict not a boolean', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {}, strict: 'yes' } } }), 'response_format.json_schema.strict', /boolean/],
    ['json_schema schema not an object', '/v1/chat/completions', chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: [] } } }), 'response_format.json_schema.schema', /object/],
    ['tools not an array', '/v1/chat/completions', chat({ tools: {} }), 'tools', /array/],
    ['tool type not function', '/v1/chat/completions', chat({ tools: [{ type: 'code', function: { name: 'f' } }] }), 'tools[0].type', /function/],
    ['tool names twice', '/v1/chat/completions', chat({ tools: [WEATHER_TOOL, WEATHER_TOOL] }), 'tools[1].function.name', /twice/],
    ['tool_choice an unknown string', '/v1/chat/completions', chat({ tools: [WEATHER_TOOL], tool_choice: 'always' }), 'tool_choice', /required/],
    ['parallel_tool_calls not a boolean', '/v1/chat/completions', chat({ parallel_tool_calls: 'yes' }), 'parallel_tool_calls', /boolean/],
    ['tool name bad', '/v1/chat/completions', chat({ tools: [{ type: 'function', function: { name: 'a b' } }] }), 'tools[0].function.name', /letters/],
    ['tool parameters with an unsupported keyword', '/v1/chat/completions', chat({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'array', uniqueItems: true } } } } }] }), 'tools', /uniqueItems/],
    ['tool_choice names no tool', '/v1/chat/completions', chat({ tools: [WEATHER_TOOL], tool_choice: { type: 'function', function: { name: 'nope' } } }), 'tool_choice', /nope/],
    ['tool_choice required without tools', '/v1/chat/completions', chat({ tool_choice: 'required' }), 'tool_choice', /needs tools/],
    ['tools and response_format', '/v1/chat/completions', chat({ tools: [WEATHER_TOOL], response_format: { type: 'json_object' } }), 'response_format', /not both/],
    ['tool message without tool_call_id', '/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'x' }, { role: 'tool', content: 'r' }] }), 'messages[1].tool_call_id', /string/],
    ['assistant tool_calls not an array', '/v1/chat/completions', chat({ messages: [{ role: 'assistant', tool_calls: {} }] }), 'messages[0].tool_calls', /array/],
    ['top_logprobs 21', '/v1/chat/completions', chat({ logprobs: true, top_logprobs: 21 }), 'top_logprobs', /\[0, 20\]/],
    ['top_logprobs without logprobs', '/v1/chat/completions', chat({ top_logprobs: 2 }), 'top_logprobs', /logprobs: true/],
    ['logprobs a number on chat', '/v1/chat/completions', chat({ logprobs: 3 }), 'logprobs', /boolean/],
    ['completions logprobs 21', '/v1/completions', { model: MODEL, prompt: 'x', logprobs: 21 }, 'logprobs', /\[0, 20\]/],
    ['completions tools', '/v1/completions', { model: MODEL, prompt: 'x', tools: [WEATHER_TOOL] }, 'tools', /chat/],
    ['seed above 2^63', '/v1/chat/completions', chat({ seed: 2 ** 64 }), 'seed', /2\^63/],
    ['seed fractional', '/v1/chat/completions', chat({ seed: 1.5 }), 'seed', /integer/],
  ];
  it.each(cases)('%s', async (_name, path, body, param, message) => {
    const res = await post(path, body);
    const b = await jsonOf(res);
    expect(res.status, JSON.stringify(b)).toBe(400);
    expect(b.error.param).toBe(param);
    expect(b.error.message).toMatch(message);
  });

  const workers: Array<[string, object, string | RegExp]> = [
    ['temperature above 5', { temperature: 5.5 }, /\[0, 5\]/],
    ['top_p below 0.001', { top_p: 0.0005 }, /\[0.001, 1\]/],
    ['top_k 0', { top_k: 0 }, /\[1, 50\]/],
    ['top_k 51', { top_k: 51 }, /\[1, 50\]/],
    ['repetition_penalty above 2', { repetition_penalty: 2.5 }, /\[0.01, 2\]/],
    ['repetition_penalty 0', { repetition_penalty: 0 }, /\[0.01, 2\]/],
    ['seed 0', { seed: 0 }, /\[1, 9999999999\]/],
    ['seed above 9999999999', { seed: 1e10 }, /\[1, 9999999999\]/],
    ['an unknown lora adapter', { lora: 'my-adapter' }, /no LoRA adapter named "my-adapter"/],
    ['response_format bad type', { response_format: { type: 'xml' } }, /json_schema/],
    ['json_schema with an unsupported keyword', { response_format: { type: 'json_schema', json_schema: { type: 'string', pattern: '(a)\\1' } } }, /back-reference/],
    ['tools with raw', { raw: true, tools: [WEATHER_TOOL] }, /raw/],
  ];
  it.each(workers)('Workers AI: %s', async (_name, extra, message) => {
    const res = await post(WORKERS, { prompt: 'x', max_tokens: 2, ...extra });
    const b = await jsonOf(res);
    expect(res.status, JSON.stringify(b)).toBe(400);
    expect(b.success).toBe(false);
    expect(b.errors[0].message).toMatch(message);
  });
});

describe('Workers AI ranges and seeds', () => {
  it('/ai/run accepts its own ranges (temperature 5, top_k 50, seed 9999999999, repetition_penalty 2)', async () => {
    const r = await jsonOf(await post(WORKERS, { prompt: 'x', max_tokens: 3, temperature: 5, top_k: 50, top_p: 0.001, seed: 9999999999, repetition_penalty: 2 }));
    expect(r.success, JSON.stringify(r)).toBe(true);
  });

  it('/v1 keeps OpenAI\'s ranges and takes seeds up to 2^63; large seeds replay and fold to distinct choices', async () => {
    const bad = await post('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'x' }], temperature: 3 });
    expect(bad.status).toBe(400);
    const big = 2 ** 62 + 2 ** 40;
    const request = { model: MODEL, messages: [{ role: 'user' as const, content: 'seed' }], max_tokens: 8, seed: big, n: 2 };
    const a = await client.chat.completions.create(request);
    const b = await client.chat.completions.create(request);
    expect(a.choices.map((c) => c.message.content)).toEqual(b.choices.map((c) => c.message.content));
    const seeds = a.choices.map((c) => (c as unknown as { seed: number }).seed);
    expect(seeds[0]).toBe(big);
    expect(seeds[1]).not.toBe(big);
    // The same as the generator with that seed.
    let text = '';
    for await (const ev of gen.generate(gen.encodeChat(request.messages), validateSamplingParams({ max_tokens: 8, seed: big }))) {
      if (ev.type === 'text') text += ev.text;
    }
    expect(a.choices[0]!.message.content).toBe(text);
    const top = await client.chat.completions.create({ ...request, n: 1, seed: 2 ** 63 - 1 });
    expect(top.choices[0]!.finish_reason).toBeDefined();
  });
});
