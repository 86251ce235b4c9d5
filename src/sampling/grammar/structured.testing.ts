/**
 * Test helpers for structured output: sampling a constraint under random logits, and random JSON
 * schemas drawn from every keyword the compiler takes (for the fuzz against an independent
 * validator).
 */
import type { OpenChatTokenizer } from '../../tokenizer/index.ts';
import type { Rng } from '../../util/rng.ts';
import type { ConstraintFactory } from './constraint.ts';

/**
 * Decodes under `constraint` with random logits (4 x a normal per token, sampled at temperature 1
 * by the Gumbel-max trick over the allowed ids: the same distribution as masking full random
 * logits), at most `limit` tokens. `ended`: an end-of-turn token came.
 */
export function sampleTokens(constraint: ConstraintFactory, tokenizer: OpenChatTokenizer, rng: Rng, limit: number): { text: string; ended: boolean; tokens: number[] } {
  const m = constraint.start();
  const tokens: number[] = [];
  for (let i = 0; i < limit; i++) {
    const allowed = m.allowed(limit - i) ?? Uint32Array.from({ length: tokenizer.vocabSize }, (_, k) => k);
    if (allowed.length === 0) throw new Error('the constraint allows no token');
    const token = randomLogitsPick(allowed, rng);
    m.accept(token);
    if (tokenizer.stopIds.includes(token)) return { text: tokenizer.decode(tokens, { skipSpecial: true }), ended: true, tokens };
    tokens.push(token);
  }
  return { text: tokenizer.decode(tokens, { skipSpecial: true }), ended: false, tokens };
}

/** A token drawn from logits 4 x normal over `allowed`, at temperature 1 (the Gumbel-max trick). */
export function randomLogitsPick(allowed: Uint32Array, rng: Rng): number {
  let best = -Infinity;
  let token = allowed[0]!;
  for (const id of allowed) {
    const v = 4 * rng.normal() - Math.log(-Math.log(rng.next() || 1e-300));
    if (v > best) {
      best = v;
      token = id;
    }
  }
  return token;
}

const PATTERNS = ['^[a-z]{2,5}$', '^\\d{3}-\\d{2}$', '[A-Z][a-z]*', '^(yes|no|maybe)$', '^\\w+@\\w+\\.com$', '^[^"\\\\]{0,8}$', '^(ab)+c?$', '^é[à-ü]{1,3}$'];
const FORMATS = ['date-time', 'time', 'date', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'uuid'];
const ANNOTATION = { description: 'a field', title: 'Field', examples: ['x'] };

/** A random schema of at most `depth` levels, with $defs and a recursive $ref now and then. */
export function randomSchema(rng: Rng, depth = 3): object {
  const defs: Record<string, object> = {};
  const schema = node(rng, depth, defs, true);
  return Object.keys(defs).length ? { ...schema, $defs: defs } : schema;
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[Math.floor(rng.next() * xs.length)]!;
}

function chance(rng: Rng, p: number): boolean {
  return rng.next() < p;
}

function randomNumber(rng: Rng, integer: boolean): number {
  const scale = pick(rng, [1, 10, 100, 1e6]);
  const v = (rng.next() * 2 - 1) * scale;
  return integer ? Math.round(v) : Math.round(v * 100) / 100;
}

function node(rng: Rng, depth: number, defs: Record<string, object>, root = false): object {
  const kinds = depth > 0 ? ['object', 'object', 'array', 'string', 'integer', 'number', 'boolean', 'null', 'enum', 'const', 'anyOf', 'types', 'ref'] : ['string', 'integer', 'number', 'boolean', 'null', 'enum'];
  const kind = root ? pick(rng, ['object', 'object', 'array', 'anyOf']) : pick(rng, kinds);
  const note = chance(rng, 0.2) ? ANNOTATION : {};
  switch (kind) {
    case 'object': {
      const n = Math.floor(rng.next() * 5);
      const properties: Record<string, object> = {};
      for (let i = 0; i < n; i++) properties[pick(rng, ['a', 'b', 'name', 'id', 'é', 'x y', `p${i}`]) + i] = node(rng, depth - 1, defs);
      const names = Object.keys(properties);
      const required = names.filter(() => chance(rng, 0.6));
      const out: Record<string, unknown> = { type: 'object', properties, required, ...note };
      out['additionalProperties'] = pick(rng, [false, false, true, undefined]);
      if (chance(rng, 0.25)) out['minProperties'] = Math.min(names.length, required.length + Math.floor(rng.next() * 2));
      if (chance(rng, 0.25)) out['maxProperties'] = Math.max(required.length, Math.floor(rng.next() * (names.length + 1)));
      if (n === 0 && chance(rng, 0.5)) return { type: 'object', additionalProperties: node(rng, depth - 1, defs), ...(chance(rng, 0.5) ? { maxProperties: 2 } : {}) };
      return out;
    }
    case 'array': {
      const out: Record<string, unknown> = { type: 'array', items: node(rng, depth - 1, defs), ...note };
      if (chance(rng, 0.4)) out['minItems'] = Math.floor(rng.next() * 3);
      if (chance(rng, 0.4)) out['maxItems'] = ((out['minItems'] as number | undefined) ?? 0) + Math.floor(rng.next() * 3);
      if (chance(rng, 0.2)) {
        out['prefixItems'] = [node(rng, depth - 1, defs), node(rng, 0, defs)];
        if (chance(rng, 0.5)) out['items'] = false;
      }
      return out;
    }
    case 'string': {
      const out: Record<string, unknown> = { type: 'string', ...note };
      const r = rng.next();
      if (r < 0.25) out['pattern'] = pick(rng, PATTERNS);
      else if (r < 0.5) out['format'] = pick(rng, FORMATS);
      if (chance(rng, 0.3) && out['format'] === undefined) {
        out['minLength'] = Math.floor(rng.next() * 3);
        out['maxLength'] = (out['minLength'] as number) + Math.floor(rng.next() * 8);
      }
      return out;
    }
    case 'integer':
    case 'number': {
      const integer = kind === 'integer';
      const out: Record<string, unknown> = { type: kind, ...note };
      const lo = randomNumber(rng, integer);
      const hi = lo + Math.abs(randomNumber(rng, integer)) + (integer ? 1 : 0.5);
      if (chance(rng, 0.4)) out[chance(rng, 0.5) ? 'minimum' : 'exclusiveMinimum'] = lo;
      if (chance(rng, 0.4)) out[chance(rng, 0.5) ? 'maximum' : 'exclusiveMaximum'] = hi;
      if (chance(rng, 0.25)) out['multipleOf'] = integer ? pick(rng, [2, 3, 5, 7, 10]) : pick(rng, [0.5, 0.25, 0.1, 2, 3]);
      return out;
    }
    case 'boolean':
    case 'null':
      return { type: kind, ...note };
    case 'enum':
      return { enum: [pick(rng, ['a', 'b"q', 'é']), randomNumber(rng, true), null, pick(rng, [true, { k: [1] }, 'z'])] };
    case 'const':
      return { const: pick(rng, ['fixed', 42, { a: null }, [1, 'two']]) };
    case 'anyOf':
      return { anyOf: [node(rng, depth - 1, defs), node(rng, depth - 1, defs)], ...note };
    case 'types':
      return { type: [pick(rng, ['string', 'integer', 'number', 'boolean']), 'null'] };
    default: {
      // A definition, recursive (through an optional property or an array) half the time.
      const name = `D${Object.keys(defs).length}`;
      defs[name] = {};
      const body = chance(rng, 0.5)
        ? { type: 'object', properties: { v: node(rng, 0, defs), next: { anyOf: [{ $ref: `#/$defs/${name}` }, { type: 'null' }] } }, required: ['v'], additionalProperties: false }
        : node(rng, depth - 1, defs);
      defs[name] = body;
      return { $ref: `#/$defs/${name}` };
    }
  }
}

/**
 * A JSON schema for tests and benchmarks of JSON mode: an object with a string, an integer, an
 * enum, an array of strings, and an `anyOf` of null and a `$ref`'d nested object (whose zip is an
 * integer or null), so one schema reaches every kind of node the compiler builds.
 */
export const PERSON_SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    age: { type: 'integer' },
    role: { enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string' } },
    address: {
      anyOf: [
        { type: 'null' },
        { $ref: '#/$defs/address' },
      ],
    },
  },
  required: ['name', 'age', 'role', 'tags', 'address'],
  additionalProperties: false,
  $defs: {
    address: {
      type: 'object',
      properties: { city: { type: 'string' }, zip: { type: ['integer', 'null'] } },
      required: ['city', 'zip'],
      additionalProperties: false,
    },
  },
};

/**
 * What Pydantic writes for a model with constrained fields (conlist, Field(pattern=..., ge=, le=),
 * datetime, EmailStr, UUID, a multipleOf price, an Optional with a default, an Enum by $ref).
 */
export const PYDANTIC_ORDER_SCHEMA = {
  title: 'Order',
  type: 'object',
  properties: {
    id: { title: 'Id', type: 'string', format: 'uuid' },
    placed: { title: 'Placed', type: 'string', format: 'date-time' },
    email: { title: 'Email', type: 'string', format: 'email' },
    sku: { title: 'Sku', type: 'string', pattern: '^[A-Z]{3}-\\d{4}$' },
    quantity: { title: 'Quantity', type: 'integer', minimum: 1, maximum: 99 },
    discount: { title: 'Discount', type: 'number', minimum: 0, exclusiveMaximum: 1, default: 0 },
    price: { type: 'number', multipleOf: 0.01, minimum: 0, maximum: 10000 },
    tags: { title: 'Tags', type: 'array', items: { type: 'string', minLength: 1, maxLength: 12 }, minItems: 1, maxItems: 3 },
    note: { anyOf: [{ type: 'string', maxLength: 20 }, { type: 'null' }], default: null },
    status: { $ref: '#/$defs/Status' },
  },
  required: ['id', 'placed', 'email', 'sku', 'quantity', 'discount', 'price', 'tags', 'note', 'status'],
  additionalProperties: false,
  $defs: { Status: { title: 'Status', enum: ['new', 'paid', 'shipped'], type: 'string' } },
};
