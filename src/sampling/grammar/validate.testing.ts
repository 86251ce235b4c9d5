/**
 * The independent validator the tests hold constrained output to: ajv (a maintained JSON-schema
 * validator, in its JSON Schema 2020-12 mode: prefixItems, $defs) with ajv-formats' full format checks, not the compiler's own reading of the schema.
 * multipleOf is replaced by an exact decimal check of the double's shortest form (ajv divides in
 * floating point, so 0.07 fails multipleOf 0.01 and -4489262.3 fails multipleOf 0.1).
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

// ajv-formats is CommonJS: under NodeNext its default export is the module object.
const addFormats = addFormatsModule.default;

const ajv = new Ajv2020({ strict: false, validateFormats: true });
addFormats(ajv);
ajv.removeKeyword('multipleOf');
ajv.addKeyword({ keyword: 'multipleOf', type: 'number', schemaType: 'number', validate: (m: number, x: number) => exactMultiple(x, m) });

/** x / m is an integer, in exact decimal arithmetic on both numbers' shortest decimal forms. */
export function exactMultiple(x: number, m: number): boolean {
  const scaled = (v: number): [bigint, number] => {
    const [mant, exp = '0'] = String(Math.abs(v)).split('e') as [string, string?];
    const [i, f = ''] = mant.split('.') as [string, string?];
    return [BigInt(i + f), f.length - Number(exp)]; // v = digits * 10^-scale
  };
  let [a, p] = scaled(x);
  let [b, q] = scaled(m);
  // Bring both to one scale, then the remainder must vanish.
  const s = Math.max(p, q);
  a *= 10n ** BigInt(s - p);
  b *= 10n ** BigInt(s - q);
  return b !== 0n && a % b === 0n;
}
const compiled = new WeakMap<object, ReturnType<typeof ajv.compile>>();

/** Null when `value` is valid under `schema`, else ajv's account of why not. */
export function invalidJson(value: unknown, schema: unknown): string | null {
  if (schema === true) return null;
  const s = schema as object;
  let validate = compiled.get(s);
  if (!validate) {
    validate = ajv.compile(s);
    compiled.set(s, validate);
  }
  return validate(value) ? null : ajv.errorsText(validate.errors);
}
