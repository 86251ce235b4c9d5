/**
 * JSON schemas -> grammar rules (grammar.ts) whose language is exactly the JSON texts the engine
 * may write for the schema: every one parses and validates.
 *
 * Covered: OpenAI's strict structured-output subset, whole, and more:
 *   objects     properties, required, additionalProperties (false, true or a schema),
 *               minProperties / maxProperties (see below)
 *   arrays      items, prefixItems (and the older array form of items), minItems, maxItems
 *   strings     pattern (regex.ts), format (formats.ts), minLength, maxLength
 *   numbers     minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf (numbers.ts:
 *               exact for integers; numbers with bounds are written without an exponent, at most
 *               15 significant digits)
 *   and         enum, const, anyOf, allOf of one schema, a list of types, local $refs (JSON
 *               pointers into the schema, recursion included), true / {} (any value)
 * Annotations (title, description, default, examples, $schema, $id, $comment, deprecated,
 * readOnly, writeOnly, ...) are ignored. Anything else is refused with a `SchemaError` naming the
 * keyword and where it is, never silently ignored.
 *
 * What is written: an object's properties in the order the schema declares them, only declared
 * ones when there are any (valid whatever additionalProperties says); an object without
 * `properties` takes free keys with values of `additionalProperties` (any value when absent or
 * true). Whitespace between tokens is free up to MAX_WHITESPACE bytes in a row. Strings are written
 * canonically (JSON.stringify's escapes). Rules that cannot keep every output valid are refused:
 * uniqueItems true (an automaton cannot remember every earlier item), minProperties above 1 on an
 * object with free keys (a repeated key would count once), oneOf (options may overlap).
 */
import { DfaBuilder, EmptyLanguageError, intersect, literalsDfa, TooManyStatesError, type Dfa } from './dfa.ts';
import { FORMAT_PATTERNS } from './formats.ts';
import { GrammarBuilder, GrammarError, type Grammar, type Sym } from './grammar.ts';
import { NumberBoundsError, numberDfa, type NumberBounds } from './numbers.ts';
import { compileRegex, RegexError } from './regex.ts';

/** A schema uses something this engine cannot enforce; `keyword` names it, `path` says where. */
export class SchemaError extends Error {
  constructor(
    readonly keyword: string,
    readonly path: string,
    message: string,
  ) {
    super(`${message} (at ${path || '#'})`);
    this.name = 'SchemaError';
  }
}

export const MAX_WHITESPACE = 20;
/** Longest string length (code points) a length bound is enforced up to; a larger maxLength is met by writing at most this many. */
export const MAX_ENFORCED_LENGTH = 1000;
/** Most array items or object properties a count bound may name (one rule per position). */
const MAX_COUNT = 5000;

const ANNOTATIONS = new Set([
  'title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly',
  '$anchor', 'discriminator', 'contentMediaType', 'contentEncoding', 'strict',
]);
const TYPES = ['string', 'number', 'integer', 'boolean', 'null', 'object', 'array'] as const;
type TypeName = (typeof TYPES)[number];

/** Keywords by the type they constrain (a keyword for another type beside a "type" is refused). */
const BY_TYPE: Record<TypeName, readonly string[]> = {
  object: ['properties', 'required', 'additionalProperties', 'minProperties', 'maxProperties'],
  array: ['items', 'prefixItems', 'minItems', 'maxItems', 'uniqueItems'],
  string: ['pattern', 'format', 'minLength', 'maxLength'],
  number: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'],
  integer: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'],
  boolean: [],
  null: [],
};
const TYPED = new Set(Object.values(BY_TYPE).flat());
const KNOWN = new Set([...ANNOTATIONS, ...TYPED, 'type', 'enum', 'const', 'anyOf', 'allOf', '$defs', 'definitions', '$ref']);

const encoder = new TextEncoder();
const SHARED_TERMINALS = new Map<string, Dfa>();
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The grammar of a schema's JSON texts (`null`: any JSON object, response_format json_object). */
export function compileSchema(schema: unknown | null): Grammar {
  const b = new GrammarBuilder();
  const c = new SchemaCompiler(b);
  const value = schema === null ? c.anyObject() : c.value(schema, '#');
  return c.finish(b.add('root', [[c.ws, GrammarBuilder.r(value), c.ws]]));
}

/**
 * Compiles schemas into rules of one GrammarBuilder, so callers can compose them (tools.ts puts
 * several functions' argument schemas into one call grammar). Terminals are shared.
 */
export class SchemaCompiler {
  readonly ws: Sym;
  private readonly literals = new Map<string, Sym>();
  private readonly refs = new Map<string, number>();
  private anyValueRule: number | undefined;
  /** The root of the schema being compiled (what "#" and JSON pointers resolve against). */
  private root: unknown;
  private rootPrefix = '';

  constructor(private readonly b: GrammarBuilder) {
    const ws = new DfaBuilder();
    let s = ws.state(true);
    for (let i = 0; i < MAX_WHITESPACE; i++) {
      const t = ws.state(true);
      ws.edge(s, 0x09, 0x0a, t);
      ws.edge(s, 0x0d, 0x0d, t);
      ws.edge(s, 0x20, 0x20, t);
      s = t;
    }
    this.ws = GrammarBuilder.t(ws.build());
  }

  /** The grammar with `root` as its start; grammar errors become SchemaErrors. */
  finish(root: number): Grammar {
    try {
      return this.b.build(root);
    } catch (err) {
      if (err instanceof GrammarError) throw new SchemaError('$ref', '#', `the schema admits no finite value (its $refs recurse through required properties without end): ${err.message}`);
      throw err;
    }
  }

  /** A fixed text, e.g. `{` or a key with its quotes. */
  lit(text: string): Sym {
    let s = this.literals.get(text);
    if (!s) {
      s = GrammarBuilder.t(literalsDfa([encoder.encode(text)]));
      this.literals.set(text, s);
    }
    return s;
  }

  /**
   * The rule for values of `schema`. `schema` is a root of its own ("#" refers to it) unless it is
   * inside the schema being compiled; `prefix` keeps rule names of several roots apart.
   */
  value(schema: unknown, path: string, prefix = ''): number {
    const outer = this.root;
    const outerPrefix = this.rootPrefix;
    const outerRefs = new Map(this.refs);
    this.root = schema;
    this.rootPrefix = prefix;
    this.refs.clear();
    try {
      return this.node(schema, path);
    } finally {
      this.root = outer;
      this.rootPrefix = outerPrefix;
      this.refs.clear();
      for (const [k, v] of outerRefs) this.refs.set(k, v);
    }
  }

  /** Any JSON object (free keys, any values). */
  anyObject(): number {
    return this.freeObject(this.anyValue(), 0, Infinity, '#');
  }

  // -------------------------------------------------------------------------

  private rule(hint: string, alts: Sym[][]): number {
    return this.b.add(`${this.rootPrefix}${hint}`, alts);
  }

  private node(schema: unknown, path: string): number {
    if (schema === true) return this.anyValue();
    if (schema === false) throw new SchemaError('false', path, 'the schema `false` admits no value');
    if (!isObject(schema)) throw new SchemaError('schema', path, 'a schema must be an object (or true)');
    const s = schema;
    for (const key of Object.keys(s)) {
      if (KNOWN.has(key)) continue;
      if (key === 'oneOf') throw new SchemaError(key, path, '"oneOf" is not supported (its options may overlap, and an output matching two would be invalid); use "anyOf"');
      throw new SchemaError(key, path, `the JSON-schema keyword "${key}" is not supported (supported: ${[...KNOWN].filter((k) => !ANNOTATIONS.has(k)).join(', ')})`);
    }
    const beside = (keyword: string, allowed: string[] = []) => {
      const others = Object.keys(s).filter((k) => k !== keyword && k !== '$defs' && k !== 'definitions' && !ANNOTATIONS.has(k) && !allowed.includes(k));
      if (others.length) throw new SchemaError(others[0]!, path, `"${others[0]}" beside "${keyword}" is not supported; put it inside the referenced or listed schemas`);
    };
    if ('$ref' in s) {
      beside('$ref');
      return this.ref(s['$ref'], path);
    }
    if ('allOf' in s) {
      beside('allOf');
      const list = s['allOf'];
      if (!Array.isArray(list) || list.length !== 1) throw new SchemaError('allOf', path, '"allOf" is supported with exactly one schema (as Pydantic writes a $ref with a description); merge the schemas into one');
      return this.node(list[0], `${path}/allOf/0`);
    }
    if ('anyOf' in s) {
      beside('anyOf');
      const list = s['anyOf'];
      if (!Array.isArray(list) || list.length === 0) throw new SchemaError('anyOf', path, '"anyOf" must be a non-empty array of schemas');
      return this.rule('anyOf', list.map((o, i) => [GrammarBuilder.r(this.node(o, `${path}/anyOf/${i}`))]));
    }
    if ('const' in s || 'enum' in s) return this.literal(s, path);

    const type = s['type'];
    if (type === undefined) {
      const shaped = [...TYPED].find((k) => k in s);
      if (shaped) throw new SchemaError('type', path, `"${shaped}" needs a "type"`);
      return this.anyValue();
    }
    const types = Array.isArray(type) ? type : [type];
    if (types.length === 0) throw new SchemaError('type', path, '"type" must not be an empty list');
    for (const t of types) {
      if (typeof t !== 'string' || !(TYPES as readonly string[]).includes(t)) {
        throw new SchemaError('type', path, `"type" must be one of ${TYPES.join(', ')}; got ${JSON.stringify(t)}`);
      }
    }
    for (const k of TYPED) {
      if (k in s && !types.some((t) => BY_TYPE[t as TypeName].includes(k))) {
        throw new SchemaError(k, path, `"${k}" does not apply to type ${types.map((t) => `"${t}"`).join(' or ')}`);
      }
    }
    const rules = types.map((t, i) => this.typed(s, t as TypeName, Array.isArray(type) ? `${path}/type/${i}` : path));
    return rules.length === 1 ? rules[0]! : this.rule('types', rules.map((r) => [GrammarBuilder.r(r)]));
  }

  private typed(s: Record<string, unknown>, type: TypeName, path: string): number {
    switch (type) {
      case 'object':
        return this.object(s, path);
      case 'array':
        return this.array(s, path);
      case 'string':
        return this.terminalRule('string', this.stringDfa(s, path));
      case 'number':
      case 'integer':
        return this.terminalRule(type, this.numberTerminal(s, type === 'integer', path));
      case 'boolean':
        return this.terminalRule('boolean', this.cached('boolean', () => literalsDfa([encoder.encode('true'), encoder.encode('false')])));
      case 'null':
        return this.terminalRule('null', this.cached('null', () => literalsDfa([encoder.encode('null')])));
    }
  }

  private terminalRule(hint: string, dfa: Dfa): number {
    return this.rule(hint, [[GrammarBuilder.t(dfa)]]);
  }

  /** Terminals by what they are; shared across schemas (automata are immutable), a bounded number of them. */
  private cached(key: string, make: () => Dfa): Dfa {
    let d = SHARED_TERMINALS.get(key);
    if (!d) {
      d = make();
      if (SHARED_TERMINALS.size >= 512) SHARED_TERMINALS.clear();
      SHARED_TERMINALS.set(key, d);
    }
    return d;
  }

  // --- strings ---

  private stringDfa(s: Record<string, unknown>, path: string): Dfa {
    const pattern = s['pattern'];
    const format = s['format'];
    const minLength = count(s, 'minLength', path) ?? 0;
    let maxLength = count(s, 'maxLength', path);
    if (pattern !== undefined && typeof pattern !== 'string') throw new SchemaError('pattern', path, '"pattern" must be a string (a regular expression)');
    if (format !== undefined && (typeof format !== 'string' || !Object.hasOwn(FORMAT_PATTERNS, format))) {
      throw new SchemaError('format', path, `the string format ${JSON.stringify(format)} is not supported (supported: ${Object.keys(FORMAT_PATTERNS).join(', ')})`);
    }
    if (maxLength !== undefined && minLength > maxLength) throw new SchemaError('minLength', path, `"minLength" ${minLength} is greater than "maxLength" ${maxLength}: no string satisfies the schema`);
    if (minLength > MAX_ENFORCED_LENGTH) throw new SchemaError('minLength', path, `"minLength" above ${MAX_ENFORCED_LENGTH} is not supported`);
    if (maxLength !== undefined) maxLength = Math.min(maxLength, MAX_ENFORCED_LENGTH); // shorter strings still satisfy it
    const key = JSON.stringify(['string', pattern ?? null, format ?? null, minLength, maxLength ?? null]);
    return this.cached(key, () => {
      try {
        let dfa = this.cached('string', () => compileRegex('[^]*', { encoding: 'json-string' }));
        if (pattern !== undefined) dfa = compileRegex(pattern, { encoding: 'json-string', match: 'search' }); // JSON Schema's pattern is a search, as RegExp.test
        if (format !== undefined) dfa = intersect(dfa, this.cached(`format:${format}`, () => compileRegex(FORMAT_PATTERNS[format as string]!, { encoding: 'json-string' })));
        if (minLength > 0 || maxLength !== undefined) {
          dfa = intersect(dfa, compileRegex(`[^]{${minLength},${maxLength ?? ''}}`, { encoding: 'json-string' }));
        }
        return dfa;
      } catch (err) {
        if (err instanceof RegexError) throw new SchemaError('pattern', path, `"pattern" ${JSON.stringify(pattern)}: ${err.message}`);
        if (err instanceof EmptyLanguageError) throw new SchemaError(pattern !== undefined ? 'pattern' : 'format', path, 'no string satisfies the pattern, format and length bounds together');
        if (err instanceof TooManyStatesError) throw new SchemaError(pattern !== undefined ? 'pattern' : 'maxLength', path, `the string's pattern and length bounds together need more than ${err.limit} automaton states; simplify the pattern or lower the bounds`);
        throw err;
      }
    });
  }

  // --- numbers ---

  private numberTerminal(s: Record<string, unknown>, integer: boolean, path: string): Dfa {
    const bounds: NumberBounds = { integer };
    for (const k of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'] as const) {
      const v = s[k];
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new SchemaError(k, path, `"${k}" must be a finite number`);
      bounds[k] = v;
    }
    return this.cached(JSON.stringify(['number', bounds]), () => {
      try {
        return numberDfa(bounds);
      } catch (err) {
        if (err instanceof NumberBoundsError) throw new SchemaError(err.keyword, path, err.message);
        throw err;
      }
    });
  }

  // --- enum, const ---

  private literal(s: Record<string, unknown>, path: string): number {
    const keyword = 'const' in s ? 'const' : 'enum';
    const others = Object.keys(s).filter((k) => k !== keyword && k !== 'type' && !ANNOTATIONS.has(k) && k !== '$defs' && k !== 'definitions');
    if (others.length) throw new SchemaError(others[0]!, path, `"${others[0]}" beside "${keyword}" is not supported`);
    let values: unknown[];
    if (keyword === 'const') {
      values = [s['const']];
    } else {
      const e = s['enum'];
      if (!Array.isArray(e) || e.length === 0) throw new SchemaError('enum', path, '"enum" must be a non-empty array');
      values = e;
    }
    // A "type" beside the values narrows them (OpenAI's schemas often carry both).
    const type = s['type'];
    if (type !== undefined) {
      const types = Array.isArray(type) ? type : [type];
      values = values.filter((v) => types.some((t) => jsonTypeMatches(v, t)));
      if (values.length === 0) throw new SchemaError(keyword, path, `no value of "${keyword}" has the declared "type"`);
    }
    const texts = [...new Set(values.map((v) => JSON.stringify(v)))];
    return this.terminalRule(keyword, literalsDfa(texts.map((t) => encoder.encode(t))));
  }

  // --- $ref ---

  private ref(ref: unknown, path: string): number {
    if (typeof ref !== 'string') throw new SchemaError('$ref', path, '"$ref" must be a string');
    const known = this.refs.get(ref);
    if (known !== undefined) return known;
    if (ref !== '#' && !ref.startsWith('#/')) throw new SchemaError('$ref', path, `"$ref" supports only local references ("#" or a JSON pointer such as "#/$defs/Name"); got "${ref}"`);
    let target: unknown = this.root;
    for (const raw of ref === '#' ? [] : ref.slice(2).split('/')) {
      const part = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
      if (isObject(target) && Object.hasOwn(target, part)) target = target[part];
      else if (Array.isArray(target) && /^\d+$/.test(part) && Number(part) < target.length) target = target[Number(part)];
      else throw new SchemaError('$ref', path, `"$ref" "${ref}" points at nothing in the schema`);
    }
    // Declared first, so a definition that refers to itself finds it (recursion).
    const rule = this.b.fresh(`${this.rootPrefix}ref`);
    this.refs.set(ref, rule);
    this.b.define(rule, [[GrammarBuilder.r(this.node(target, ref))]]);
    return rule;
  }

  // --- any value ---

  private anyValue(): number {
    if (this.anyValueRule !== undefined) return this.anyValueRule;
    const rule = this.b.fresh('any');
    this.anyValueRule = rule;
    const r = GrammarBuilder.r;
    const array = this.repeated(() => rule, 0, Infinity, [], '#');
    const object = this.freeObject(rule, 0, Infinity, '#');
    const scalars = this.cached('scalars', () =>
      literalsDfa(['true', 'false', 'null'].map((t) => encoder.encode(t))),
    );
    this.b.define(rule, [
      [r(object)],
      [r(array)],
      [GrammarBuilder.t(this.cached('string', () => compileRegex('[^]*', { encoding: 'json-string' })))],
      [GrammarBuilder.t(this.cached(JSON.stringify(['number', { integer: false }]), () => numberDfa({ integer: false })))],
      [GrammarBuilder.t(scalars)],
    ]);
    return rule;
  }

  // --- arrays ---

  private array(s: Record<string, unknown>, path: string): number {
    const minItems = count(s, 'minItems', path) ?? 0;
    const maxItems = count(s, 'maxItems', path) ?? Infinity;
    if (minItems > maxItems) throw new SchemaError('minItems', path, `"minItems" ${minItems} is greater than "maxItems" ${maxItems}: no array satisfies the schema`);
    if (s['uniqueItems'] !== undefined && typeof s['uniqueItems'] !== 'boolean') throw new SchemaError('uniqueItems', path, '"uniqueItems" must be a boolean');
    if (s['uniqueItems'] === true && maxItems > 1) {
      throw new SchemaError('uniqueItems', path, '"uniqueItems": true is not supported (an automaton cannot remember every earlier item to keep them distinct); drop it or set "maxItems": 1');
    }
    let prefix: unknown[] = [];
    let items: unknown = s['items'];
    if (Array.isArray(items)) {
      prefix = items; // the older tuple form: items is the list, the rest is free
      items = undefined;
    }
    if (s['prefixItems'] !== undefined) {
      if (!Array.isArray(s['prefixItems'])) throw new SchemaError('prefixItems', path, '"prefixItems" must be an array of schemas');
      prefix = s['prefixItems'];
    }
    const prefixRules = prefix.map((p, i) => this.node(p, `${path}/prefixItems/${i}`));
    let itemRule: (() => number) | null;
    if (items === false) itemRule = null;
    else if (items === undefined || items === true) itemRule = () => this.anyValue();
    else {
      let r: number | undefined;
      itemRule = () => (r ??= this.node(items, `${path}/items`));
    }
    const most = itemRule === null ? Math.min(maxItems, prefix.length) : maxItems;
    if (minItems > most) throw new SchemaError('minItems', path, `"minItems" ${minItems} asks for more items than "items": false allows (${prefix.length})`);
    return this.repeated(itemRule, minItems, most, prefixRules, path);
  }

  /**
   * `[` items `]` with between `min` and `max` items: position i takes `prefix[i]` or `item()`.
   * Rules per position up to the last that differs (prefix, min, max), then one that repeats.
   */
  private repeated(item: (() => number) | null, min: number, max: number, prefix: number[], path: string): number {
    const r = GrammarBuilder.r;
    const bounded = Math.max(prefix.length, min, Number.isFinite(max) ? max : 0);
    if (bounded > MAX_COUNT) throw new SchemaError('maxItems', path, `array bounds above ${MAX_COUNT} items are not supported`);
    const at = (i: number) => (i < prefix.length ? prefix[i]! : item!());
    const ws = this.ws;
    const close = this.lit(']');
    const comma = this.lit(',');
    // next(i): after i items.
    const next: number[] = [];
    const nextRule = (i: number): number => {
      const repeating = i >= Math.max(prefix.length, min) && max === Infinity;
      const slot = repeating ? Math.max(prefix.length, min) : i;
      if (next[slot] !== undefined) return next[slot]!;
      const rule = this.b.fresh(`${this.rootPrefix}items`);
      next[slot] = rule;
      const alts: Sym[][] = [];
      if (i < max && (i < prefix.length || item)) alts.push([ws, comma, ws, r(at(i)), r(nextRule(i + 1))]);
      if (i >= min) alts.push([ws, close]);
      this.b.define(rule, alts);
      return rule;
    };
    const first: Sym[][] = [];
    if (min === 0) first.push([close]);
    if (max > 0 && (prefix.length > 0 || item)) first.push([r(at(0)), r(nextRule(1))]);
    return this.rule('array', [[this.lit('['), ws, r(this.rule('items', first))]]);
  }

  // --- objects ---

  private object(s: Record<string, unknown>, path: string): number {
    const extra = s['additionalProperties'];
    const properties = s['properties'];
    const required = s['required'] ?? [];
    const minP = count(s, 'minProperties', path) ?? 0;
    const maxP = count(s, 'maxProperties', path) ?? Infinity;
    if (minP > maxP) throw new SchemaError('minProperties', path, `"minProperties" ${minP} is greater than "maxProperties" ${maxP}: no object satisfies the schema`);
    if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) {
      throw new SchemaError('required', path, '"required" must be an array of property names');
    }
    if (extra !== undefined && typeof extra !== 'boolean' && !isObject(extra)) {
      throw new SchemaError('additionalProperties', path, '"additionalProperties" must be true, false or a schema');
    }
    if (properties === undefined) {
      if (required.length) throw new SchemaError('required', path, `"required" names "${required[0]}", which "properties" does not declare`);
      if (extra === false) return this.declaredObject([], minP, maxP, path);
      if (minP > 1) throw new SchemaError('minProperties', path, '"minProperties" above 1 on an object with free keys is not supported (a repeated key would count once); declare the properties');
      const valueRule = extra === undefined || extra === true ? this.anyValue() : this.node(extra, `${path}/additionalProperties`);
      return this.freeObject(valueRule, minP, maxP, path);
    }
    if (!isObject(properties)) throw new SchemaError('properties', path, '"properties" must be an object of schemas');
    const names = Object.keys(properties);
    for (const r of required) {
      if (!names.includes(r)) throw new SchemaError('required', path, `"required" names "${r}", which "properties" does not declare`);
    }
    const props = names.map((name) => ({
      name,
      required: required.includes(name),
      value: this.node(properties[name], `${path}/properties/${name.replaceAll('~', '~0').replaceAll('/', '~1')}`),
    }));
    return this.declaredObject(props, minP, maxP, path);
  }

  /**
   * Declared properties in order, optional ones skippable. Rules are indexed by the property
   * index k and, when a count bound applies, by how many properties are written so far c:
   *   first(k, c): none written yet;  after(k, c): some written (the next needs a comma).
   */
  private declaredObject(props: { name: string; required: boolean; value: number }[], minP: number, maxP: number, path: string): number {
    const n = props.length;
    const requiredCount = props.filter((p) => p.required).length;
    if (requiredCount > maxP) throw new SchemaError('maxProperties', path, `"maxProperties" ${maxP} is less than the ${requiredCount} required properties`);
    if (minP > n) throw new SchemaError('minProperties', path, `"minProperties" ${minP} asks for more properties than the ${n} declared`);
    if (n > MAX_COUNT) throw new SchemaError('properties', path, `objects with more than ${MAX_COUNT} properties are not supported`);
    const counted = minP > requiredCount || maxP < n;
    const r = GrammarBuilder.r;
    const ws = this.ws;
    const memo = new Map<string, number>();
    const propSyms = props.map((p) => [this.lit(JSON.stringify(p.name)), ws, this.lit(':'), ws, r(p.value)]);
    const make = (kind: 'first' | 'after', k: number, c: number): number => {
      const key = `${kind}.${k}.${c}`;
      const known = memo.get(key);
      if (known !== undefined) return known;
      const rule = this.b.fresh(`${this.rootPrefix}${kind}`);
      memo.set(key, rule);
      const alts: Sym[][] = [];
      // Can the rest still meet the minimum? (k..n-1 left, c written)
      if (k === n) {
        if (c >= minP) alts.push(kind === 'first' ? [this.lit('}')] : [ws, this.lit('}')]);
      } else {
        const p = props[k]!;
        const c2 = counted ? c + 1 : 0;
        if (!counted || c < maxP) {
          const lead = kind === 'first' ? [] : [ws, this.lit(','), ws];
          alts.push([...lead, ...propSyms[k]!, r(make('after', k + 1, c2))]);
        }
        if (!p.required && (!counted || c + (n - k - 1) >= minP)) alts.push([r(make(kind, k + 1, c))]);
      }
      this.b.define(rule, alts);
      return rule;
    };
    return this.rule('object', [[this.lit('{'), ws, r(make('first', 0, 0))]]);
  }

  /** `{` "key": value, ... `}` with free keys, at most `max` pairs (and at least `min`, which is 0 or 1). */
  private freeObject(valueRule: number, min: number, max: number, path: string): number {
    if (Number.isFinite(max) && max > MAX_COUNT) throw new SchemaError('maxProperties', path, `"maxProperties" above ${MAX_COUNT} is not supported`);
    const r = GrammarBuilder.r;
    const ws = this.ws;
    const key = GrammarBuilder.t(this.cached('string', () => compileRegex('[^]*', { encoding: 'json-string' })));
    const pair = [key, ws, this.lit(':'), ws, r(valueRule)];
    const more: number[] = [];
    const moreRule = (i: number): number => {
      const slot = max === Infinity ? 1 : i;
      if (more[slot] !== undefined) return more[slot]!;
      const rule = this.b.fresh(`${this.rootPrefix}pairs`);
      more[slot] = rule;
      const alts: Sym[][] = [[ws, this.lit('}')]];
      if (i < max) alts.push([ws, this.lit(','), ws, ...pair, r(moreRule(i + 1))]);
      this.b.define(rule, alts);
      return rule;
    };
    const first: Sym[][] = [];
    if (min === 0) first.push([this.lit('}')]);
    if (max > 0) first.push([...pair, r(moreRule(1))]);
    return this.rule('object', [[this.lit('{'), ws, r(this.rule('pairs', first))]]);
  }
}

/** A non-negative integer keyword (minItems, maxLength, ...), or undefined when absent. */
function count(s: Record<string, unknown>, keyword: string, path: string): number | undefined {
  const v = s[keyword];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new SchemaError(keyword, path, `"${keyword}" must be a non-negative integer`);
  return v;
}

/** Whether a JSON value has a JSON-schema type. */
export function jsonTypeMatches(v: unknown, type: unknown): boolean {
  switch (type) {
    case 'null':
      return v === null;
    case 'boolean':
      return typeof v === 'boolean';
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'array':
      return Array.isArray(v);
    case 'object':
      return isObject(v);
    default:
      return false;
  }
}
