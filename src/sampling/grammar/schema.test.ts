import { beforeAll, describe, expect, it } from 'vitest';
import { OpenChatTokenizer } from '../../tokenizer/index.ts';
import { BUNDLED_MODEL_DIR } from '../../generator.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed } from '../../util/testing.ts';
import { GrammarConstraint, TextOrGrammar, TokenVocabulary } from './constraint.ts';
import { Matcher, type MatchState } from './matcher.ts';
import { compileSchema, MAX_WHITESPACE, SchemaError } from './schema.ts';
import { GrammarCache, compileSpec } from './specs.ts';
import { PYDANTIC_ORDER_SCHEMA, randomSchema, sampleTokens } from './structured.testing.ts';
import { invalidJson } from './validate.testing.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

const invalid = invalidJson;

/** The schemas the engine is exercised with: every construct, alone and nested. */
export const SCHEMAS: Record<string, object> = {
  person: {
    type: 'object',
    properties: {
      name: { type: 'string' },
      age: { type: 'integer' },
      height: { type: 'number' },
      alive: { type: 'boolean' },
      spouse: { type: ['string', 'null'] },
    },
    required: ['name', 'age', 'height', 'alive', 'spouse'],
    additionalProperties: false,
  },
  enums: {
    type: 'object',
    properties: {
      colour: { type: 'string', enum: ['red', 'green', 'blue'] },
      size: { enum: [1, 12, 123, 'x', null, true] },
      fixed: { const: { a: [1, 'é'] } },
    },
    required: ['colour', 'size', 'fixed'],
    additionalProperties: false,
  },
  nested: {
    type: 'object',
    properties: {
      items: {
        type: 'array',
        items: {
          type: 'object',
          properties: { id: { type: 'integer' }, tags: { type: 'array', items: { type: 'string' } } },
          required: ['id', 'tags'],
          additionalProperties: false,
        },
      },
      meta: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false },
    },
    required: ['items', 'meta'],
    additionalProperties: false,
  },
  anyOf: {
    type: 'object',
    properties: {
      value: {
        anyOf: [
          { type: 'object', properties: { kind: { const: 'a' }, x: { type: 'number' } }, required: ['kind', 'x'], additionalProperties: false },
          { type: 'object', properties: { kind: { const: 'b' }, y: { type: 'string' } }, required: ['kind', 'y'], additionalProperties: false },
          { type: 'integer' },
          { type: 'null' },
        ],
      },
    },
    required: ['value'],
    additionalProperties: false,
  },
  recursive: {
    $defs: {
      node: {
        type: 'object',
        properties: { label: { type: 'string' }, children: { type: 'array', items: { $ref: '#/$defs/node' } } },
        required: ['label', 'children'],
        additionalProperties: false,
      },
    },
    $ref: '#/$defs/node',
  },
  optional: {
    type: 'object',
    properties: { a: { type: 'integer' }, b: { type: 'string' }, c: { type: 'boolean' } },
    required: ['b'],
    additionalProperties: false,
  },
  unicodeKeys: {
    type: 'object',
    properties: { 'straße': { type: 'string' }, 'a"b': { type: 'null' } },
    required: ['straße', 'a"b'],
    additionalProperties: false,
  },
  rootArray: { type: 'array', items: { type: 'number' } },
  rootNumber: { type: 'number' },
  anyObject: { type: 'object' },
  pydantic: PYDANTIC_ORDER_SCHEMA,
  formats: {
    type: 'object',
    properties: Object.fromEntries(['date-time', 'time', 'date', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'uuid'].map((f) => [f, { type: 'string', format: f }])),
    required: ['date-time', 'time', 'date', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'uuid'],
    additionalProperties: false,
  },
  counts: {
    type: 'object',
    properties: {
      a: { type: 'integer', multipleOf: 3, exclusiveMinimum: -10, maximum: 40 },
      b: { type: 'boolean' },
      c: { type: 'null' },
      d: { type: 'array', prefixItems: [{ type: 'integer' }, { type: 'string' }], items: false, minItems: 1 },
      e: { type: 'object', additionalProperties: { type: 'integer', minimum: 0 }, maxProperties: 2 },
    },
    minProperties: 2,
    maxProperties: 3,
    additionalProperties: false,
  },
};

let tokenizer: OpenChatTokenizer;
let vocab: TokenVocabulary;

beforeAll(async () => {
  tokenizer = await OpenChatTokenizer.load(BUNDLED_MODEL_DIR);
  vocab = new TokenVocabulary(tokenizer.tokenBytes());
});

function matcherOf(schema: unknown): Matcher {
  return new Matcher(compileSchema(schema));
}

/** The states after a text (empty: not a valid prefix). */
function feed(m: Matcher, bytes: Uint8Array | string): MatchState[] {
  return m.stepBytes([m.initial], typeof bytes === 'string' ? enc.encode(bytes) : bytes);
}

describe('JSON schema -> grammar', () => {
  it('refuses what it cannot keep valid, naming the keyword', () => {
    const cases: Array<[unknown, string]> = [
      [{ oneOf: [{ type: 'string' }] }, 'oneOf'],
      [{ allOf: [{ type: 'string' }, { minLength: 2 }] }, 'allOf'],
      [{ not: { type: 'string' } }, 'not'],
      [{ type: 'array', items: { type: 'string' }, uniqueItems: true }, 'uniqueItems'],
      [{ type: 'object', minProperties: 2 }, 'minProperties'],
      [{ type: 'string', format: 'credit-card' }, 'format'],
      [{ type: 'string', pattern: '(a)\\1' }, 'pattern'],
      [{ type: 'string', pattern: '(?=a)b' }, 'pattern'],
      [{ type: 'string', minLength: 5, maxLength: 2 }, 'minLength'],
      [{ type: 'integer', minimum: 5, maximum: 3 }, 'minimum'],
      [{ type: 'integer', multipleOf: 0 }, 'multipleOf'],
      [{ type: 'array', minItems: 3, maxItems: 1 }, 'minItems'],
      [{ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'], maxProperties: 0 }, 'maxProperties'],
      [{ $ref: 'http://example.com/s.json' }, '$ref'],
      [{ $ref: '#/$defs/missing', $defs: {} }, '$ref'],
      [{ type: 'date' }, 'type'],
      [{ type: 'object', properties: { a: { type: 'string' } }, required: ['b'] }, 'required'],
      [{ enum: [] }, 'enum'],
      [{ type: 'string', items: { type: 'string' } }, 'items'],
      [{ type: 'string', minimum: 1 }, 'minimum'],
      [{ type: 'object', patternProperties: { a: {} } }, 'patternProperties'],
      [{ $defs: { n: { type: 'object', properties: { n: { $ref: '#/$defs/n' } }, required: ['n'] } }, $ref: '#/$defs/n' }, '$ref'],
    ];
    for (const [schema, keyword] of cases) {
      let err: unknown;
      try {
        compileSchema(schema);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(schema)).toBeInstanceOf(SchemaError);
      expect((err as SchemaError).keyword, JSON.stringify(schema)).toBe(keyword);
      expect((err as SchemaError).message, JSON.stringify(schema)).toContain(keyword);
    }
  });

  it('accepts every schema here, and the annotations OpenAI and Pydantic write', () => {
    for (const [name, schema] of Object.entries(SCHEMAS)) expect(() => compileSchema(schema), name).not.toThrow();
    const annotated = { $schema: 'https://json-schema.org/draft/2020-12/schema', $id: 'x', title: 't', description: 'd', $comment: 'c', type: 'string', default: 'a', examples: ['b'], deprecated: true, readOnly: false, writeOnly: false };
    expect(() => compileSchema(annotated)).not.toThrow();
    expect(() => compileSchema({ allOf: [{ $ref: '#/$defs/A' }], $defs: { A: { type: 'integer' } } })).not.toThrow();
  });

  it('accepts valid documents and allows the end only where the value is complete', () => {
    const docs: Array<[string, string]> = [
      ['person', '{"name":"Ann \\"A\\" é","age":-12,"height":1.5e+3,"alive":true,"spouse":null}'],
      ['person', ' {\n  "name": "", "age": 0, "height": -0.25, "alive": false, "spouse": "Bo"\n}\n'],
      ['enums', '{"colour":"green","size":12,"fixed":{"a":[1,"é"]}}'],
      ['nested', '{"items":[{"id":1,"tags":["a","b"]},{"id":2,"tags":[]}],"meta":{"ok":true}}'],
      ['anyOf', '{"value":{"kind":"b","y":"z"}}'],
      ['anyOf', '{"value":7}'],
      ['recursive', '{"label":"r","children":[{"label":"c","children":[]}]}'],
      ['optional', '{"b":"x"}'],
      ['optional', '{"a":1,"b":"x","c":true}'],
      ['unicodeKeys', '{"straße":"x","a\\"b":null}'],
      ['rootArray', '[1, 2.5, -3e2]'],
      ['anyObject', '{"k":[1,{"z":null}],"s":"v","t":true}'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-03-15T10:30:00Z","email":"a.b@example.com","sku":"ABC-1234","quantity":99,"discount":0.5,"price":12.34,"tags":["x"],"note":null,"status":"paid"}'],
      ['counts', '{"a":-9,"d":[1]}'],
      ['counts', '{"b":true,"c":null,"e":{"k":1,"j":0}}'],
    ];
    for (const [name, doc] of docs) {
      const m = matcherOf(SCHEMAS[name]);
      const states = feed(m, doc);
      expect(states.length, `${name}: ${doc}`).toBeGreaterThan(0);
      expect(states.some((s) => m.canFinish(s)), `${name} complete: ${doc}`).toBe(true);
      expect(invalid(JSON.parse(doc), SCHEMAS[name]), name).toBeNull();
      const cut = doc.trimEnd().length - 1;
      expect(feed(m, doc.slice(0, cut)).some((s) => m.canFinish(s)), doc.slice(0, cut)).toBe(false);
    }
  });

  it('rejects what is not a valid prefix', () => {
    const bad: Array<[string, string]> = [
      ['person', '{"nam":'],
      ['person', '{"age":1'],
      ['person', '{"name":"a","age":1.5'],
      ['person', '{"name":"a\x01'],
      ['person', '{"name":"\\x'],
      ['person', '{"name":"a","age":01'],
      ['person', '{"name":"a",}'],
      ['enums', '{"colour":"yellow'],
      ['enums', '{"colour":"red","size":13'],
      ['optional', '{}'],
      ['optional', '{"b":"x","a":1'],
      ['rootArray', '[1,]'],
      ['anyObject', '[1]'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-44665544000g'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-02-30'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-03-15T10:30:00Z","email":"a.b@example.com","sku":"AB-'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-03-15T10:30:00Z","email":"a.b@example.com","sku":"ABC-1234","quantity":100'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-03-15T10:30:00Z","email":"a.b@example.com","sku":"ABC-1234","quantity":0'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-03-15T10:30:00Z","email":"a.b@example.com","sku":"ABC-1234","quantity":5,"discount":1,'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-03-15T10:30:00Z","email":"a.b@example.com","sku":"ABC-1234","quantity":5,"discount":0,"price":1.234'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-03-15T10:30:00Z","email":"a.b@example.com","sku":"ABC-1234","quantity":5,"discount":0,"price":1,"tags":[]'],
      ['pydantic', '{"id":"550e8400-e29b-41d4-a716-446655440000","placed":"2024-03-15T10:30:00Z","email":"a.b@example.com","sku":"ABC-1234","quantity":5,"discount":0,"price":1,"tags":["a","b","c",'],
      ['counts', '{"a":-12'],
      ['counts', '{"a":3,"b":true,"c":null,'],
      ['counts', '{"a":3}'],
    ];
    for (const [name, doc] of bad) {
      expect(feed(matcherOf(SCHEMAS[name]), doc).length, `${name}: ${JSON.stringify(doc)}`).toBe(0);
    }
    // Broken UTF-8 (a lead byte then ASCII) inside a string.
    expect(feed(matcherOf(SCHEMAS['person']), Uint8Array.from([...enc.encode('{"name":"'), 0xc3, 0x28])).length).toBe(0);
  });

  it('bounds whitespace', () => {
    const m = matcherOf(SCHEMAS['anyObject']);
    expect(feed(m, '{' + ' '.repeat(MAX_WHITESPACE)).length).toBeGreaterThan(0);
    expect(feed(m, '{' + ' '.repeat(MAX_WHITESPACE + 1)).length).toBe(0);
    expect(feed(m, '{}' + '\n'.repeat(MAX_WHITESPACE + 1)).length).toBe(0);
  });

  it('distance is the length of a shortest completion, which a byte-by-byte walk reaches', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const printable = [...' "{}[],:-.0123456789abeflnrstuxyzAT@\\é'].flatMap((c) => [...enc.encode(c)]);
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      const m = matcherOf(schema);
      for (let trial = 0; trial < 6; trial++) {
        let states = [m.initial];
        const bytes: number[] = [];
        for (let i = 0; i < 40; i++) {
          const options = printable.filter((b) => m.stepBytes(states, Uint8Array.of(b)).length > 0);
          if (options.length === 0) break;
          const b = options[Math.floor(rng.next() * options.length)]!;
          states = m.stepBytes(states, Uint8Array.of(b));
          bytes.push(b);
        }
        let d = Math.min(...states.map((s) => m.distance(s)));
        const start = d;
        let steps = 0;
        while (!states.some((s) => m.canFinish(s))) {
          let next: MatchState[] | null = null;
          for (let b = 0; b < 256 && !next; b++) {
            const out = m.stepBytes(states, Uint8Array.of(b));
            if (out.length && Math.min(...out.map((s) => m.distance(s))) === d - 1) {
              next = out;
              bytes.push(b);
            }
          }
          expect(next, `seed ${seed} ${name}: no byte lowers distance ${d} after ${dec.decode(Uint8Array.from(bytes))}`).not.toBeNull();
          states = next!;
          d--;
          steps++;
        }
        expect(steps, `seed ${seed} ${name}`).toBe(start);
        const text = dec.decode(Uint8Array.from(bytes));
        expect(invalid(JSON.parse(text), schema), `seed ${seed} ${name}: ${text}`).toBeNull();
      }
    }
  });
});

describe('constrained sampling on the OpenChat vocabulary (32002 tokens)', () => {
  it('builds the token byte table: spaces, byte fallback, special tokens', () => {
    const bytes = tokenizer.tokenBytes();
    expect(bytes.length).toBe(32002);
    for (const id of [0, 1, 2, 32000, 32001]) expect(bytes[id], `special ${id}`).toBeNull();
    const nl = tokenizer.encode('\n').at(-1)!; // "<0x0A>"
    expect([...bytes[nl]!]).toEqual([0x0a]);
    const hello = tokenizer.encode('hello world');
    expect(dec.decode(Uint8Array.from(hello.flatMap((id) => [...bytes[id]!])))).toBe(' hello world');
  });

  it('random logits under every schema always give parseable, valid JSON ending at end-of-turn', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const cache = new GrammarCache(() => vocab, tokenizer.stopIds);
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      const constraint = cache.get({ kind: 'json', schema: name === 'anyObject' ? null : schema });
      for (let run = 0; run < 3; run++) {
        const limit = constraint.grammar.minLen[constraint.grammar.root]! + 1 + Math.floor(rng.next() * 60);
        const { text, ended } = sampleTokens(constraint, tokenizer, rng, limit);
        const where = `seed ${seed} ${name} run ${run} limit ${limit}: ${JSON.stringify(text)}`;
        expect(ended, where).toBe(true);
        let value: unknown;
        expect(() => (value = JSON.parse(text)), where).not.toThrow();
        expect(invalid(value, schema), where).toBeNull();
      }
    }
  });

  it('a fuzz of generated schemas: each compiles and every sampled output validates under ajv', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    let compiled = 0;
    for (let i = 0; i < 300; i++) {
      const schema = randomSchema(rng);
      const where = `seed ${seed} schema ${i}: ${JSON.stringify(schema)}`;
      let constraint: GrammarConstraint;
      try {
        constraint = new GrammarConstraint(compileSchema(schema), vocab, tokenizer.stopIds);
      } catch (err) {
        // The generator may combine bounds that nothing satisfies; that must be a SchemaError.
        expect(err, where).toBeInstanceOf(SchemaError);
        continue;
      }
      compiled++;
      const limit = constraint.grammar.minLen[constraint.grammar.root]! + 1 + Math.floor(rng.next() * 40);
      const { text, ended } = sampleTokens(constraint, tokenizer, rng, limit);
      expect(ended, `${where} -> ${JSON.stringify(text)}`).toBe(true);
      let value: unknown;
      expect(() => (value = JSON.parse(text)), `${where} -> ${JSON.stringify(text)}`).not.toThrow();
      expect(invalid(value, schema), `${where} -> ${JSON.stringify(text)}`).toBeNull();
    }
    expect(compiled, `seed ${seed}`).toBeGreaterThan(250);
  });

  it('a disallowed token is refused; end-of-turn only once the value is complete', () => {
    const constraint = new GrammarConstraint(compileSchema(SCHEMAS['rootArray']), vocab, tokenizer.stopIds);
    const m = constraint.start();
    const first = m.allowed(100);
    expect(first).not.toContain(32000);
    const open = tokenizer.encode('[').at(-1)!;
    expect(first).toContain(open);
    expect(() => m.accept(tokenizer.encode('{').at(-1)!)).toThrow(/not allowed/);
    m.accept(open);
    expect(() => m.accept(32000)).toThrow(/before the output is complete/);
    m.accept(tokenizer.encode(']').at(-1)!);
    expect(m.complete).toBe(true);
    expect(m.allowed(100)).toContain(32000);
    expect([...m.allowed(1)].sort()).toEqual([...tokenizer.stopIds].sort());
  });

  it('caches compiled grammars by spec', () => {
    const cache = new GrammarCache(() => vocab, tokenizer.stopIds, 2);
    const a = cache.get({ kind: 'json', schema: SCHEMAS['person'] });
    expect(cache.get({ kind: 'json', schema: JSON.parse(JSON.stringify(SCHEMAS['person'])) })).toBe(a);
    cache.get({ kind: 'json', schema: SCHEMAS['enums'] });
    cache.get({ kind: 'json', schema: SCHEMAS['nested'] }); // evicts person (least recently used)
    expect(cache.get({ kind: 'json', schema: SCHEMAS['person'] })).not.toBe(a);
  });

  it('text or a call (tool_choice auto): free text unless the first visible character is {', () => {
    const constraint = new GrammarConstraint(compileSchema(SCHEMAS['person']), vocab, tokenizer.stopIds);
    const factory = new TextOrGrammar(constraint);
    const id = (text: string) => {
      const i = vocab.bytes.findIndex((b) => b !== null && dec.decode(b) === text);
      expect(i, text).toBeGreaterThan(0);
      return i;
    };
    const first = new Set(factory.start().allowed(100));
    for (const t of [' Hello', 'the', ' ', '{', ' {']) expect(first.has(id(t)), t).toBe(true);
    expect(first.has(id('{}')), '{}').toBe(false);
    expect(first.has(tokenizer.eotId!)).toBe(true);

    const text = factory.start();
    text.accept(id(' '));
    text.accept(id(' Hello'));
    expect(text.allowed(100)).toBeNull();

    const call = factory.start();
    call.accept(id(' {'));
    const next = call.allowed(100)!;
    expect(next.length).toBeLessThan(100);
    expect(() => call.accept(id(' Hello'))).toThrow(/not allowed/);
  });

  it('parallel tool calls: one or more calls, each under its own function schema', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const functions = [
      { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 10 }, unit: { enum: ['c', 'f'] } }, required: ['city', 'unit'], additionalProperties: false } },
      { name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 9 }, b: { $ref: '#' } }, additionalProperties: false } },
      { name: 'noop' },
    ];
    const constraint = new GrammarConstraint(compileSpec({ kind: 'tools', functions, parallel: true }), vocab, tokenizer.stopIds);
    let several = 0;
    for (let run = 0; run < 12; run++) {
      const { text, ended } = sampleTokens(constraint, tokenizer, rng, 120);
      const where = `seed ${seed} run ${run}: ${JSON.stringify(text)}`;
      expect(ended, where).toBe(true);
      // Split into the calls by parsing one JSON value after another.
      let rest = text.trim();
      let calls = 0;
      while (rest.length) {
        let end = rest.length;
        let value: { name: string; arguments: unknown } | undefined;
        for (; end > 0; end--) {
          try {
            value = JSON.parse(rest.slice(0, end)) as { name: string; arguments: unknown };
            break;
          } catch {
            // shorter
          }
        }
        expect(value, where).toBeDefined();
        const f = functions.find((fn) => fn.name === value!.name);
        expect(f, where).toBeDefined();
        expect(invalid(value!.arguments, f!.parameters ?? { type: 'object', properties: {}, additionalProperties: false }), where).toBeNull();
        rest = rest.slice(end).trimStart();
        calls++;
      }
      if (calls > 1) several++;
    }
    expect(several, `seed ${seed}: no run made more than one call`).toBeGreaterThan(0);
  });
});
