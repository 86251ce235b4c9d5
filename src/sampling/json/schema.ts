/**
 * JSON schemas -> a graph of `SchemaNode`s that the byte automaton (automaton.ts) walks.
 *
 * What is covered is OpenAI's strict structured-output subset: objects with `properties`,
 * `required` and `additionalProperties`, strings, numbers, integers, booleans, null, `enum`,
 * `const`, arrays (`items`), nested objects, `anyOf`, a list of types (`["string", "null"]`),
 * and `$defs`/`definitions` with local `$ref`s (recursion included). Annotations (`title`,
 * `description`, `default`, `examples`, `$comment`, `$schema`, `$id`) are ignored. Any other
 * keyword is refused with a `SchemaError` naming it (and where it is), never silently ignored.
 *
 * Generation emits an object's properties in the order the schema declares them (as OpenAI does)
 * and never emits a property the schema does not declare; `additionalProperties` true or absent is
 * accepted because such output is still valid. A plain `{"type": "object"}` (no `properties`) is
 * any object, which is what `response_format: {type: "json_object"}` asks for.
 */

export type SchemaNode =
  | { kind: 'string'; id: number; minLen: number }
  | { kind: 'number'; id: number; minLen: number }
  | { kind: 'integer'; id: number; minLen: number }
  | { kind: 'boolean'; id: number; minLen: number }
  | { kind: 'null'; id: number; minLen: number }
  /** `enum`/`const`: the compact JSON text of each allowed value, as UTF-8. */
  | { kind: 'literal'; id: number; minLen: number; values: unknown[]; texts: Uint8Array[] }
  | { kind: 'array'; id: number; minLen: number; items: SchemaNode }
  | { kind: 'object'; id: number; minLen: number; props: Property[] }
  /** Any object: free keys, any values (json_object mode). */
  | { kind: 'anyObject'; id: number; minLen: number }
  /** Any JSON value. */
  | { kind: 'any'; id: number; minLen: number }
  | { kind: 'anyOf'; id: number; minLen: number; options: SchemaNode[] };

export interface Property {
  name: string;
  /** JSON.stringify(name) as UTF-8, quotes included: what must appear as the key. */
  key: Uint8Array;
  node: SchemaNode;
  required: boolean;
}

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

const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$comment', '$schema', '$id']);
const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null', 'object', 'array']);
const encoder = new TextEncoder();

/** The compiled form of one schema: its root node and how many nodes it has. */
export interface CompiledSchema {
  root: SchemaNode;
  nodeCount: number;
}

/** `{"type": "object"}` with free keys: response_format json_object. */
export function anyObjectSchema(): CompiledSchema {
  return { root: { kind: 'anyObject', id: 0, minLen: 2 }, nodeCount: 1 };
}

export function compileSchema(schema: unknown): CompiledSchema {
  return new Compiler(schema).compile();
}

/** A node without its id and minLen (distributed over the union's members). */
type NodeInit<T extends SchemaNode> = T extends SchemaNode ? Omit<T, 'id' | 'minLen'> : never;

class Compiler {
  private nextId = 0;
  private readonly refs = new Map<string, SchemaNode>();
  private readonly all: SchemaNode[] = [];

  constructor(private readonly rootSchema: unknown) {}

  compile(): CompiledSchema {
    const root = this.node(this.rootSchema, '#');
    computeMinLengths(this.all);
    if (!Number.isFinite(root.minLen)) {
      throw new SchemaError('$ref', '#', 'the schema admits no finite value (a required property "$ref"s back to itself)');
    }
    return { root, nodeCount: this.all.length };
  }

  private make<T extends SchemaNode = SchemaNode>(node: NodeInit<T>): T {
    const n = { ...node, id: this.nextId++, minLen: Infinity } as T;
    this.all.push(n);
    return n;
  }

  private node(schema: unknown, path: string): SchemaNode {
    if (schema === true) return this.make({ kind: 'any' });
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
      throw new SchemaError('schema', path, 'a schema must be an object');
    }
    const s = schema as Record<string, unknown>;
    for (const key of Object.keys(s)) {
      if (!KNOWN.has(key)) {
        throw new SchemaError(key, path, `the JSON-schema keyword "${key}" is not supported (supported: ${[...KNOWN].filter((k) => !ANNOTATIONS.has(k)).join(', ')})`);
      }
    }
    if ('$ref' in s) {
      const others = Object.keys(s).filter((k) => k !== '$ref' && k !== '$defs' && k !== 'definitions' && !ANNOTATIONS.has(k));
      if (others.length) throw new SchemaError(others[0]!, path, `"${others[0]}" beside "$ref" is not supported`);
      return this.ref(s['$ref'], path);
    }
    if ('anyOf' in s) {
      const others = Object.keys(s).filter((k) => k !== 'anyOf' && k !== '$defs' && k !== 'definitions' && !ANNOTATIONS.has(k));
      if (others.length) throw new SchemaError(others[0]!, path, `"${others[0]}" beside "anyOf" is not supported; put it inside each option`);
      const list = s['anyOf'];
      if (!Array.isArray(list) || list.length === 0) throw new SchemaError('anyOf', path, '"anyOf" must be a non-empty array of schemas');
      return this.make({ kind: 'anyOf', options: list.map((o, i) => this.node(o, `${path}/anyOf/${i}`)) });
    }
    if ('const' in s || 'enum' in s) return this.literal(s, path);

    const type = s['type'];
    if (type === undefined) {
      const shaped = ['properties', 'required', 'additionalProperties', 'items'].find((k) => k in s);
      if (shaped) throw new SchemaError('type', path, `"${shaped}" needs a "type"`);
      return this.make({ kind: 'any' });
    }
    if (Array.isArray(type)) {
      if (type.length === 0) throw new SchemaError('type', path, '"type" must not be an empty list');
      const options = type.map((t, i) => this.typed(s, t, `${path}/type/${i}`));
      return options.length === 1 ? options[0]! : this.make({ kind: 'anyOf', options });
    }
    return this.typed(s, type, path);
  }

  private typed(s: Record<string, unknown>, type: unknown, path: string): SchemaNode {
    if (typeof type !== 'string' || !TYPES.has(type)) {
      throw new SchemaError('type', path, `"type" must be one of ${[...TYPES].join(', ')}; got ${JSON.stringify(type)}`);
    }
    const only = (allowed: string[]) => {
      for (const k of ['properties', 'required', 'additionalProperties', 'items']) {
        if (k in s && !allowed.includes(k)) throw new SchemaError(k, path, `"${k}" does not apply to type "${type}"`);
      }
    };
    switch (type) {
      case 'object':
        only(['properties', 'required', 'additionalProperties']);
        return this.object(s, path);
      case 'array': {
        only(['items']);
        const items = s['items'];
        if (Array.isArray(items)) throw new SchemaError('items', path, 'tuple "items" (an array of schemas) is not supported');
        return this.make({ kind: 'array', items: items === undefined ? this.make({ kind: 'any' }) : this.node(items, `${path}/items`) });
      }
      default:
        only([]);
        return this.make({ kind: type as 'string' | 'number' | 'integer' | 'boolean' | 'null' });
    }
  }

  private object(s: Record<string, unknown>, path: string): SchemaNode {
    const extra = s['additionalProperties'];
    if (extra !== undefined && typeof extra !== 'boolean') {
      throw new SchemaError('additionalProperties', path, '"additionalProperties" must be true or false (a schema for extra properties is not supported)');
    }
    const properties = s['properties'];
    const required = s['required'] ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) {
      throw new SchemaError('required', path, '"required" must be an array of property names');
    }
    if (properties === undefined) {
      if (required.length) throw new SchemaError('required', path, `"required" names "${required[0]}", which "properties" does not declare`);
      // No declared properties: any object, unless extra properties are forbidden (then only {}).
      return extra === false ? this.make({ kind: 'object', props: [] }) : this.make({ kind: 'anyObject' });
    }
    if (typeof properties !== 'object' || properties === null || Array.isArray(properties)) {
      throw new SchemaError('properties', path, '"properties" must be an object of schemas');
    }
    const names = Object.keys(properties);
    for (const r of required) {
      if (!names.includes(r)) throw new SchemaError('required', path, `"required" names "${r}", which "properties" does not declare`);
    }
    const node = this.make<Extract<SchemaNode, { kind: 'object' }>>({ kind: 'object', props: [] });
    for (const name of names) {
      node.props.push({
        name,
        key: encoder.encode(JSON.stringify(name)),
        node: this.node((properties as Record<string, unknown>)[name], `${path}/properties/${escapePointer(name)}`),
        required: required.includes(name),
      });
    }
    return node;
  }

  private literal(s: Record<string, unknown>, path: string): SchemaNode {
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
    return this.make({ kind: 'literal', values, texts: texts.map((t) => encoder.encode(t)) });
  }

  private ref(ref: unknown, path: string): SchemaNode {
    if (typeof ref !== 'string') throw new SchemaError('$ref', path, '"$ref" must be a string');
    const cached = this.refs.get(ref);
    if (cached) return cached;
    let target: unknown;
    if (ref === '#') {
      target = this.rootSchema;
    } else {
      const m = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref);
      if (!m) throw new SchemaError('$ref', path, `"$ref" supports only local references ("#", "#/$defs/Name" or "#/definitions/Name"); got "${ref}"`);
      const defs = (this.rootSchema as Record<string, unknown>)[m[1]!];
      const name = m[2]!.replaceAll('~1', '/').replaceAll('~0', '~');
      if (typeof defs !== 'object' || defs === null || !Object.hasOwn(defs, name)) {
        throw new SchemaError('$ref', path, `"$ref" "${ref}" names no definition in the schema's ${m[1]}`);
      }
      target = (defs as Record<string, unknown>)[name];
    }
    // A placeholder first, so a definition that refers to itself finds it (recursion); it becomes
    // the compiled node once that is built.
    const placeholder = { kind: 'any', id: -1, minLen: Infinity } as SchemaNode;
    this.refs.set(ref, placeholder);
    const compiled = this.node(target, ref);
    Object.assign(placeholder, compiled);
    this.all.push(placeholder); // a copy of `compiled` (same fields): its minLen is computed alike
    return placeholder;
  }
}

const KNOWN = new Set([
  ...ANNOTATIONS,
  'type',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'enum',
  'const',
  'anyOf',
  '$defs',
  'definitions',
  '$ref',
]);

function escapePointer(name: string): string {
  return name.replaceAll('~', '~0').replaceAll('/', '~1');
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
      return typeof v === 'object' && v !== null && !Array.isArray(v);
    default:
      return false;
  }
}

/**
 * The length in bytes of the shortest JSON text of each node (whitespace-free), by fixed-point
 * iteration from +Infinity (needed for recursive references). The automaton's distance to a
 * finished value is built from these.
 */
function computeMinLengths(nodes: SchemaNode[]): void {
  for (let changed = true, rounds = 0; changed && rounds < 10_000; rounds++) {
    changed = false;
    for (const n of nodes) {
      const v = minLenOf(n);
      if (v < n.minLen) {
        n.minLen = v;
        changed = true;
      }
    }
  }
}

function minLenOf(n: SchemaNode): number {
  switch (n.kind) {
    case 'string':
      return 2; // ""
    case 'number':
    case 'integer':
    case 'any':
      return 1; // 0
    case 'boolean':
      return 4; // true
    case 'null':
      return 4;
    case 'literal':
      return Math.min(...n.texts.map((t) => t.length));
    case 'array':
    case 'anyObject':
      return 2; // [] or {}
    case 'anyOf':
      return Math.min(...n.options.map((o) => o.minLen));
    case 'object':
      return 2 + requiredCost(n.props, 0) - (n.props.some((p) => p.required) ? 1 : 0);
  }
}

/**
 * Bytes the required properties from index `i` on need at the least, each with one separating
 * comma: sum of (comma + key + colon + shortest value).
 */
export function requiredCost(props: Property[], i: number): number {
  let sum = 0;
  for (let k = i; k < props.length; k++) {
    const p = props[k]!;
    if (p.required) sum += 1 + p.key.length + 1 + p.node.minLen;
  }
  return sum;
}
