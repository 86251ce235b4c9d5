import { beforeAll, describe, expect, it } from 'vitest';
import { OpenChatTokenizer } from '../../tokenizer/index.ts';
import { BUNDLED_MODEL_DIR } from '../../generator.ts';
import { Rng } from '../../util/rng.ts';
import { freshSeed } from '../../util/testing.ts';
import { DEFAULT_SAMPLING } from '../params.ts';
import { Sampler } from '../sampler.ts';
import { canFinish, distance, initialState, step, stepBytes, MAX_WHITESPACE, type State } from './automaton.ts';
import { GrammarCache, JsonGrammar, TextOrJson, TokenVocabulary } from './grammar.ts';
import { compileSchema, SchemaError } from './schema.ts';
import { validateJson } from './validate.ts';

const enc = new TextEncoder();

/** The schemas the engine is exercised with: every construct of the subset, alone and nested. */
const SCHEMAS: Record<string, unknown> = {
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
};

let tokenizer: OpenChatTokenizer;
let vocab: TokenVocabulary;

beforeAll(async () => {
  tokenizer = await OpenChatTokenizer.load(BUNDLED_MODEL_DIR);
  vocab = new TokenVocabulary(tokenizer.tokenBytes());
});

/** Feeds a text byte by byte; the states after it (empty: not a valid prefix). */
function feed(schema: unknown, text: string): State[] {
  return stepBytes([initialState(compileSchema(schema).root)], enc.encode(text));
}

describe('schema compiler', () => {
  it('refuses keywords outside the subset, naming the keyword', () => {
    const cases: Array<[unknown, string]> = [
      [{ type: 'string', pattern: '^a' }, 'pattern'],
      [{ type: 'string', format: 'date' }, 'format'],
      [{ type: 'string', minLength: 2 }, 'minLength'],
      [{ type: 'integer', minimum: 0 }, 'minimum'],
      [{ oneOf: [{ type: 'string' }] }, 'oneOf'],
      [{ allOf: [{ type: 'string' }] }, 'allOf'],
      [{ not: { type: 'string' } }, 'not'],
      [{ type: 'object', properties: { a: { type: 'string', maxLength: 3 } } }, 'maxLength'],
      [{ type: 'object', additionalProperties: { type: 'string' } }, 'additionalProperties'],
      [{ type: 'array', items: [{ type: 'string' }] }, 'items'],
      [{ type: 'array', items: { type: 'string' }, minItems: 1 }, 'minItems'],
      [{ $ref: 'http://example.com/s.json' }, '$ref'],
      [{ $ref: '#/$defs/missing', $defs: {} }, '$ref'],
      [{ type: 'date' }, 'type'],
      [{ type: 'object', properties: { a: { type: 'string' } }, required: ['b'] }, 'required'],
      [{ enum: [] }, 'enum'],
      [{ type: 'string', items: { type: 'string' } }, 'items'],
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
      expect((err as SchemaError).message).toContain(keyword);
    }
  });

  it('accepts every schema of the subset', () => {
    for (const [name, schema] of Object.entries(SCHEMAS)) expect(() => compileSchema(schema), name).not.toThrow();
  });
});

describe('byte automaton', () => {
  it('accepts valid documents and only at their end allows finishing', () => {
    const docs: Array<[string, string]> = [
      ['person', '{"name":"Ann \\"A\\" \\u00e9 é","age":-12,"height":1.5e+3,"alive":true,"spouse":null}'],
      ['person', ' {\n  "name": "", "age": 0, "height": -0.25, "alive": false, "spouse": "Bo"\n}\n'],
      ['enums', '{"colour":"green","size":12,"fixed":{"a":[1,"é"]}}'],
      ['enums', '{"colour":"red","size":1,"fixed":{"a":[1,"é"]}}'],
      ['nested', '{"items":[{"id":1,"tags":["a","b"]},{"id":2,"tags":[]}],"meta":{"ok":true}}'],
      ['anyOf', '{"value":{"kind":"b","y":"z"}}'],
      ['anyOf', '{"value":7}'],
      ['anyOf', '{"value":null}'],
      ['recursive', '{"label":"r","children":[{"label":"c","children":[]}]}'],
      ['optional', '{"b":"x"}'],
      ['optional', '{"a":1,"b":"x","c":true}'],
      ['unicodeKeys', '{"straße":"x","a\\"b":null}'],
      ['rootArray', '[1, 2.5, -3e2]'],
      ['rootNumber', '42'],
      ['anyObject', '{"k":[1,{"z":null}],"s":"v","t":true}'],
    ];
    for (const [name, doc] of docs) {
      const states = feed(SCHEMAS[name], doc);
      expect(states.length, `${name}: ${doc}`).toBeGreaterThan(0);
      expect(states.some(canFinish), `${name} complete: ${doc}`).toBe(true);
      expect(validateJson(JSON.parse(doc), SCHEMAS[name]), name).toBeNull();
      // No proper prefix that ends inside the structure may finish.
      const cut = doc.trimEnd().length - 1;
      if (name !== 'rootNumber' && name !== 'enums') expect(feed(SCHEMAS[name], doc.slice(0, cut)).some(canFinish), doc.slice(0, cut)).toBe(false);
    }
  });

  it('rejects what is not a valid prefix', () => {
    const bad: Array<[string, string]> = [
      ['person', '{"nam":'], // unknown key
      ['person', '{"age":1'], // out of order: name is required first
      ['person', '{"name":"a","age":1.5'], // integer with a fraction
      ['person', '{"name":"a\x01'], // raw control character
      ['person', '{"name":"\\x'], // bad escape
      ['person', '{"name":"a","age":01'], // leading zero
      ['person', '{"name":"a",}'], // trailing comma
      ['enums', '{"colour":"yellow'],
      ['enums', '{"colour":"red","size":13'],
      ['optional', '{}'], // b is required
      ['optional', '{"b":"x","a":1'], // declared order
      ['rootArray', '[1,]'],
      ['rootArray', '[1 2'],
      ['anyObject', '[1]'],
      ['anyObject', '{"a" 1'],
      ['person', '{"name":"\xc3('], // broken UTF-8 (a lead byte then ASCII)
    ];
    for (const [name, doc] of bad) {
      const bytes = doc.includes('\xc3(') ? Uint8Array.from([...enc.encode(doc.slice(0, -2)), 0xc3, 0x28]) : enc.encode(doc);
      const states = stepBytes([initialState(compileSchema(SCHEMAS[name]).root)], bytes);
      expect(states.length, `${name}: ${JSON.stringify(doc)}`).toBe(0);
    }
  });

  it('bounds whitespace', () => {
    expect(feed(SCHEMAS['anyObject'], '{' + ' '.repeat(MAX_WHITESPACE)).length).toBeGreaterThan(0);
    expect(feed(SCHEMAS['anyObject'], '{' + ' '.repeat(MAX_WHITESPACE + 1)).length).toBe(0);
    expect(feed(SCHEMAS['anyObject'], '{}' + '\n'.repeat(MAX_WHITESPACE + 1)).length).toBe(0);
  });

  it('distance is the length of a shortest completion, which a byte-by-byte walk reaches', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const printable = [...' "{}[],:-.0123456789abeflnrstuxyz\\é'].flatMap((c) => [...enc.encode(c)]);
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      for (let trial = 0; trial < 10; trial++) {
        // A random valid prefix...
        let states = [initialState(compileSchema(schema).root)];
        const bytes: number[] = [];
        for (let i = 0; i < 40; i++) {
          const options = printable.filter((b) => stepBytes(states, Uint8Array.of(b)).length > 0);
          if (options.length === 0) break;
          const b = options[Math.floor(rng.next() * options.length)]!;
          states = stepBytes(states, Uint8Array.of(b));
          bytes.push(b);
        }
        // ...completed by always taking a byte that lowers the distance by one.
        let d = Math.min(...states.map(distance));
        const start = d;
        let steps = 0;
        while (!states.some(canFinish)) {
          let next: State[] | null = null;
          for (let b = 0; b < 256 && !next; b++) {
            const out: State[] = [];
            for (const s of states) step(s, b, out);
            if (out.length && Math.min(...out.map(distance)) === d - 1) {
              next = out;
              bytes.push(b);
            }
          }
          expect(next, `seed ${seed} ${name}: no byte lowers distance ${d} after ${new TextDecoder().decode(Uint8Array.from(bytes))}`).not.toBeNull();
          states = next!;
          d--;
          steps++;
        }
        expect(steps, `seed ${seed} ${name}`).toBe(start);
        const text = new TextDecoder().decode(Uint8Array.from(bytes));
        expect(validateJson(JSON.parse(text), schema), `seed ${seed} ${name}: ${text}`).toBeNull();
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
    expect(new TextDecoder().decode(Uint8Array.from(hello.flatMap((id) => [...bytes[id]!])))).toBe(' hello world');
  });

  it('random logits under every schema always give parseable, schema-valid JSON ending at end-of-turn', () => {
    const seed = freshSeed();
    const rng = new Rng(seed);
    const eot = tokenizer.eotId!;
    const cache = new GrammarCache(() => vocab, tokenizer.stopIds);
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      const grammar = cache.get(name === 'anyObject' ? null : schema);
      for (let run = 0; run < 3; run++) {
        const limit = grammar.schema.root.minLen + 1 + Math.floor(rng.next() * 60);
        const sampler = new Sampler({ ...DEFAULT_SAMPLING, temperature: 1 + rng.next() }, 32002, rng.nextU32());
        const matcher = grammar.start();
        const generated: number[] = [];
        let ended = false;
        for (let i = 0; i < limit && !ended; i++) {
          const logits = new Float32Array(32002);
          for (let j = 0; j < logits.length; j++) logits[j] = 4 * rng.normal();
          const token = sampler.sample(logits, { prompt: [], generated }, matcher.allowed(limit - i));
          matcher.accept(token);
          if (tokenizer.stopIds.includes(token)) ended = true;
          else generated.push(token);
        }
        const text = tokenizer.decode(generated, { skipSpecial: true });
        const where = `seed ${seed} ${name} run ${run} limit ${limit}: ${JSON.stringify(text)}`;
        expect(ended, where).toBe(true);
        let value: unknown;
        expect(() => (value = JSON.parse(text)), where).not.toThrow();
        expect(validateJson(value, name === 'anyObject' ? { type: 'object' } : schema), where).toBeNull();
      }
    }
    expect(eot).toBe(32000);
  });

  it('a disallowed token is refused by the matcher; end-of-turn only once the value is complete', () => {
    const grammar = JsonGrammar.compile(SCHEMAS['rootArray'], vocab, tokenizer.stopIds);
    const m = grammar.start();
    const first = m.allowed(100);
    expect(first).not.toContain(32000);
    const open = tokenizer.encode('[').at(-1)!;
    expect(first).toContain(open);
    expect(() => m.accept(tokenizer.encode('{').at(-1)!)).toThrow(/not allowed/);
    m.accept(open);
    expect(() => m.accept(32000)).toThrow(/before the JSON value is complete/);
    m.accept(tokenizer.encode(']').at(-1)!);
    expect(m.complete).toBe(true);
    expect(m.allowed(100)).toContain(32000);
    // With one token left only the end of turn remains.
    expect([...m.allowed(1)].sort()).toEqual([...tokenizer.stopIds].sort());
  });

  it('caches compiled grammars by schema', () => {
    const cache = new GrammarCache(() => vocab, tokenizer.stopIds, 2);
    const a = cache.get(SCHEMAS['person']);
    expect(cache.get(JSON.parse(JSON.stringify(SCHEMAS['person'])))).toBe(a);
    cache.get(SCHEMAS['enums']);
    cache.get(SCHEMAS['nested']); // evicts person (least recently used)
    expect(cache.get(SCHEMAS['person'])).not.toBe(a);
  });

  it('text or JSON (tool_choice auto): free text unless the first visible character is {, then the grammar', () => {
    const grammar = JsonGrammar.compile(SCHEMAS['person'], vocab, tokenizer.stopIds);
    const factory = new TextOrJson(grammar);
    const id = (text: string) => {
      const i = vocab.bytes.findIndex((b) => b !== null && new TextDecoder().decode(b) === text);
      expect(i, text).toBeGreaterThan(0);
      return i;
    };
    // Undecided: ordinary text, whitespace and the start of a valid value are allowed; "{}" is not
    // (the schema requires properties), nor is anything else that opens with { but breaks the grammar.
    const first = new Set(factory.start().allowed(100));
    for (const t of [' Hello', 'the', ' ', '{', ' {']) expect(first.has(id(t)), t).toBe(true);
    expect(first.has(id('{}')), '{}').toBe(false);
    expect(first.has(tokenizer.eotId!)).toBe(true);

    const text = factory.start();
    text.accept(id(' '));
    text.accept(id(' Hello'));
    expect(text.allowed(100)).toBeNull(); // decided: text, anything goes

    const call = factory.start();
    call.accept(id(' {'));
    const next = call.allowed(100)!;
    expect(next).not.toBeNull();
    expect(next.length).toBeLessThan(100); // only whitespace and the start of "name"
    expect(() => call.accept(id(' Hello'))).toThrow(/not allowed/);
  });
});
