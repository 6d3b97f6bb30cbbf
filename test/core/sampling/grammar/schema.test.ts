// What a schema compiles to, seen from outside: keywords it cannot enforce are refused by name,
// unsatisfiable schemas are refused, and the supported keywords shape the outputs as they should.
import t from 'tap';
import { UnsupportedSchemaError, compileGrammar, type ResponseFormat } from '../../../../src/core/sampling/grammar/index.js';
import { byteTokens, customVocab, sample, validate } from './sample.js';

const vocab = customVocab(byteTokens());
const format = (schema: unknown, strict = true): ResponseFormat => ({ type: 'json_schema', json_schema: { name: 't', schema, strict } });
const compile = (schema: unknown, strict = true) => compileGrammar(format(schema, strict), vocab)!;

/** Outputs over several seeds, parsed. */
function outputs(schema: unknown, n = 20, strict = true): unknown[] {
  const g = compile(schema, strict);
  return Array.from({ length: n }, (_, seed) => JSON.parse(sample(g, seed, 400).text) as unknown);
}

t.test('unsupported keywords are refused, every one named, wherever they are', async (t) => {
  const schema = {
    type: 'object',
    properties: {
      a: { type: 'string', pattern: '^x', format: 'email' },
      b: { type: 'array', items: { type: 'number', minimum: 0 }, uniqueItems: true },
      c: { oneOf: [{ type: 'string' }] },
    },
    $defs: { d: { type: 'string', maxLength: 3 } },
    patternProperties: {},
  };
  const err = t.throws(() => compile(schema)) as UnsupportedSchemaError;
  t.type(err, UnsupportedSchemaError);
  t.same(err.keywords, ['format', 'maxLength', 'minimum', 'oneOf', 'pattern', 'patternProperties', 'uniqueItems']);
  t.match(err.message, /unsupported JSON schema keywords: format, maxLength, minimum, oneOf, pattern, patternProperties, uniqueItems/);
});

t.test('annotations are ignored, not refused', async (t) => {
  const g = compile({ title: 'T', description: 'd', $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'string', default: 'x', examples: ['y'] });
  t.type(JSON.parse(sample(g, 1, 200).text), 'string');
});

t.test('malformed and unsatisfiable schemas are refused with a reason', async (t) => {
  t.throws(() => compile({ type: 'strin' }), /unknown JSON schema type "strin"/);
  t.throws(() => compile({ type: 'array', minItems: 3, maxItems: 2 }), /minItems > maxItems/);
  t.throws(() => compile({ enum: [] }), /empty enum/);
  t.throws(() => compile({ type: 'string', enum: [1, 2] }), /empty enum/);
  t.throws(() => compile({ type: 'object', properties: {}, required: ['x'], additionalProperties: false }), /required "x"/);
  t.throws(() => compile({ $ref: '#/$defs/missing' }), /points to nothing/);
  t.throws(() => compile({ $ref: 'https://example.com/s.json' }), UnsupportedSchemaError);
  t.throws(() => compile({ $defs: { a: { $ref: '#/$defs/a' } }, $ref: '#/$defs/a' }), /refers only to itself/);
  // A node that must contain itself has no finite instance.
  t.throws(
    () => compile({ $defs: { n: { type: 'object', properties: { n: { $ref: '#/$defs/n' } }, required: ['n'] } }, $ref: '#/$defs/n' }),
    /no finite JSON document/,
  );
  t.throws(() => compile({ anyOf: [{ type: 'object' }, { type: 'object', properties: { a: { type: 'string' } } }] }), /anyOf.*start with the same/);
  t.throws(() => compile({ type: 'object', anyOf: [{ type: 'object' }] }), /anyOf.*alongside type/);
  t.throws(() => compile({ enum: [{}], properties: {} }), /enum.*alongside properties/);
  t.throws(() => compile({ type: 'array', items: [{ type: 'string' }] }), /items \(array form\)/);
});

t.test('strict mode: objects allow no undeclared keys; required ones always appear, in order', async (t) => {
  const schema = { type: 'object', properties: { z: { type: 'boolean' }, a: { type: 'null' }, m: { type: 'integer' } }, required: ['z', 'm'] };
  for (const out of outputs(schema)) {
    t.same(
      Object.keys(out as object).filter((k) => k !== 'a'),
      ['z', 'm'],
    );
    t.equal(validate({ ...schema, additionalProperties: false }, out), null);
  }
});

t.test('an object with no declared properties: free keys unless strict (or additionalProperties: false)', async (t) => {
  for (const out of outputs({ type: 'object' }, 10, true)) t.same(out, {});
  for (const out of outputs({ type: 'object', additionalProperties: false }, 5, false)) t.same(out, {});
  const map = { type: 'object', additionalProperties: { type: 'integer' } };
  const outs = outputs(map, 20, false);
  for (const out of outs) t.equal(validate(map, out), null);
  t.ok(
    outs.some((o) => Object.keys(o as object).length > 0),
    'some maps have keys',
  );
});

t.test('anyOf and type lists, enum, const, $ref recursion, minItems/maxItems', async (t) => {
  const cases: unknown[] = [
    { anyOf: [{ type: 'string' }, { type: 'null' }] },
    { type: ['integer', 'boolean', 'null'] },
    { type: ['number', 'integer'] },
    { enum: ['a', 'b\n"c', 3, null, { x: [1] }] },
    { const: { k: 'é' } },
    { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 3 },
    {
      $defs: {
        tree: {
          type: 'object',
          properties: { v: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/$defs/tree' }, maxItems: 2 } },
          required: ['v'],
        },
      },
      $ref: '#/$defs/tree',
    },
    { definitions: { s: { type: 'string' } }, type: 'array', items: { $ref: '#/definitions/s' } },
  ];
  for (const schema of cases) {
    for (const out of outputs(schema, 10)) t.equal(validate(schema as object, out), null, JSON.stringify(schema));
  }
});

t.test('json_schema without a schema: any JSON value', async (t) => {
  const g = compileGrammar({ type: 'json_schema', json_schema: { name: 'any' } }, vocab)!;
  for (let seed = 0; seed < 10; seed++) t.doesNotThrow(() => JSON.parse(sample(g, seed, 300).text));
});

t.test('text needs no grammar', async (t) => {
  t.equal(compileGrammar({ type: 'text' }, vocab), null);
});
