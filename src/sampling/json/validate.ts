/**
 * A JSON-schema validator for the subset schema.ts compiles, written independently of the
 * compiler: tests check constrained output against the schema itself with it, not against the
 * compiler's own reading of it. Returns null when `value` is valid, else where and why not.
 */
import { jsonTypeMatches } from './schema.ts';

export function validateJson(value: unknown, schema: unknown, root: unknown = schema, path = '$'): string | null {
  if (schema === true || (typeof schema === 'object' && schema !== null && Object.keys(schema).length === 0)) return null;
  const s = schema as Record<string, unknown>;
  if (typeof s['$ref'] === 'string') {
    const ref = s['$ref'];
    if (ref === '#') return validateJson(value, root, root, path);
    const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(ref);
    if (!m) return `${path}: unsupported $ref ${ref}`;
    return validateJson(value, (root as Record<string, Record<string, unknown>>)[m[1]!]![m[2]!], root, path);
  }
  if (Array.isArray(s['anyOf'])) {
    return s['anyOf'].some((o) => validateJson(value, o, root, path) === null) ? null : `${path}: matches no anyOf option`;
  }
  if ('const' in s && JSON.stringify(s['const']) !== JSON.stringify(value)) return `${path}: is not the const`;
  if (Array.isArray(s['enum']) && !s['enum'].some((e) => JSON.stringify(e) === JSON.stringify(value))) return `${path}: not in enum`;
  const type = s['type'];
  if (type !== undefined) {
    const types = Array.isArray(type) ? type : [type];
    if (!types.some((t) => jsonTypeMatches(value, t))) return `${path}: ${JSON.stringify(value)} is not of type ${JSON.stringify(type)}`;
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const props = (s['properties'] ?? {}) as Record<string, unknown>;
    for (const r of (s['required'] ?? []) as string[]) if (!Object.hasOwn(value, r)) return `${path}: missing required ${r}`;
    for (const [k, v] of Object.entries(value)) {
      if (Object.hasOwn(props, k)) {
        const e = validateJson(v, props[k], root, `${path}.${k}`);
        if (e) return e;
      } else if (s['additionalProperties'] === false) {
        return `${path}: additional property ${k}`;
      }
    }
  }
  if (Array.isArray(value) && s['items'] !== undefined) {
    for (let i = 0; i < value.length; i++) {
      const e = validateJson(value[i], s['items'], root, `${path}[${i}]`);
      if (e) return e;
    }
  }
  return null;
}
