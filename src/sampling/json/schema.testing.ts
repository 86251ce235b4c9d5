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
