// Property tests on both real tokenizers: sampling uniformly among the tokens a grammar allows
// (random logits, masked, argmax), within a token budget, always ends in a document that parses,
// validates against its schema (ajv), and decodes the same through the real tokenizer; and each
// mask is exactly the set of tokens accept() takes.
import { Tokenizer } from '@huggingface/tokenizers';
import fc from 'fast-check';
import t from 'tap';
import { compileGrammar, type Grammar, type ResponseFormat } from '../../../../src/core/sampling/grammar/index.js';
import { sample, validate } from './sample.js';
import { llama2, shakespeare, vocabOf, type TestTokenizer } from './tokenizers.js';

const format = (schema: unknown): ResponseFormat => ({ type: 'json_schema', json_schema: { name: 't', schema, strict: true } });

const SCHEMAS: object[] = [
  {
    type: 'object',
    properties: { name: { type: 'string' }, nick: { type: 'string' }, age: { type: 'integer' }, score: { type: 'number' }, ok: { type: 'boolean' } },
    required: ['name', 'age'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: { color: { enum: ['red', 'green', 'blue', 'dark "red"\\'] }, n: { const: 42 } },
    required: ['color', 'n'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: {
      items: {
        type: 'array',
        items: {
          type: 'object',
          properties: { id: { type: 'integer' }, tags: { type: 'array', items: { type: 'string' }, maxItems: 2 } },
          required: ['id', 'tags'],
          additionalProperties: false,
        },
        minItems: 1,
        maxItems: 3,
      },
    },
    required: ['items'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: { text: { type: 'string' }, note: { anyOf: [{ type: 'string' }, { type: 'null' }] } },
    required: ['text', 'note'],
    additionalProperties: false,
  },
  { type: 'array', items: { type: 'number' }, maxItems: 4 },
];

// ajv's deep equality (enum, const) calls a value's own `valueOf`/`toString` when the value has
// such keys, and throws: keys named like Object.prototype's members are left out of the tests'
// schemas and values (the grammar itself treats them as any other key).
const plainKey = (k: string): boolean => !(k in Object.prototype);
const plainValue = (v: unknown): boolean =>
  v === null || typeof v !== 'object' || (Array.isArray(v) ? v.every(plainValue) : Object.entries(v).every(([k, x]) => plainKey(k) && plainValue(x)));
const jsonValue = fc.jsonValue({ maxDepth: 1 }).filter(plainValue);
const key = fc.string({ unit: 'binary', maxLength: 6 }).filter(plainKey);
const leaf = fc.oneof(
  fc.constantFrom(
    { type: 'string' },
    { type: 'number' },
    { type: 'integer' },
    { type: 'boolean' },
    { type: 'null' },
    { anyOf: [{ type: 'string' }, { type: 'null' }] },
  ),
  fc.uniqueArray(jsonValue, { minLength: 1, maxLength: 4, selector: (v) => JSON.stringify(v) }).map((values) => ({ enum: values })),
  jsonValue.map((value) => ({ const: value })),
);
/** Random schemas of the supported subset: nested objects (required subsets) and arrays. */
const { schema: schemaArb } = fc.letrec<{ schema: object; object: object; array: object }>((tie) => ({
  schema: fc.oneof({ maxDepth: 3, depthSize: 'small' }, leaf, tie('object'), tie('array')),
  object: fc
    .dictionary(key, tie('schema'), { maxKeys: 4 })
    .chain((properties) => fc.subarray(Object.keys(properties)).map((required) => ({ type: 'object', properties, required, additionalProperties: false }))),
  array: fc
    .record({ items: tie('schema'), min: fc.nat(2), extra: fc.option(fc.nat(3), { nil: undefined }) })
    .map(({ items, min, extra }) => ({ type: 'array', items, minItems: min, ...(extra === undefined ? {} : { maxItems: min + extra }) })),
}));

const grammars = new Map<string, Grammar>();
function grammarFor(tok: TestTokenizer, f: ResponseFormat): Grammar {
  const k = `${tok.name} ${JSON.stringify(f)}`;
  let g = grammars.get(k);
  if (g === undefined) {
    g = compileGrammar(f, vocabOf(tok))!;
    grammars.set(k, g);
  }
  return g;
}

for (const tok of [shakespeare(), llama2()]) {
  // Both models' tokenizer_config.json turn clean_up_tokenization_spaces off (it would rewrite " ,").
  const real = new Tokenizer(tok.json, { clean_up_tokenization_spaces: false });
  /** Our bytes agree with the real decoder (which drops a SentencePiece output's first space). */
  const sameAsTokenizer = (ids: number[], text: string): boolean =>
    ids.length === 0 || real.decode(ids, { skip_special_tokens: true }) === (tok.vocabType === 'byte_fallback' ? text.replace(/^ /, '') : text);

  t.test(`${tok.name}: sampled documents parse and validate`, async (t) => {
    fc.assert(
      fc.property(fc.oneof(fc.constantFrom(...SCHEMAS), schemaArb), fc.nat(), fc.nat(40), (schema, seed, slack) => {
        const g = grammarFor(tok, format(schema));
        // A tight budget on some runs: the grammar must close the document in time.
        const budget = slack < 20 ? g.start().remaining + slack : 400;
        const out = sample(g, seed, budget);
        if (!out.finished) throw new Error(`not finished within ${budget} tokens: ${JSON.stringify(out.text)}`);
        const value: unknown = JSON.parse(out.text);
        const errors = validate(schema, value);
        if (errors !== null) throw new Error(`${errors}: ${out.text}`);
        if (!sameAsTokenizer(out.ids, out.text)) throw new Error(`decodes differently: ${JSON.stringify(out.text)}`);
      }),
      { numRuns: tok.vocabType === 'byte_level' ? 150 : 60, seed: 15 },
    );
    t.pass('all sampled documents valid');
  });

  t.test(`${tok.name}: json_object outputs parse as objects`, async (t) => {
    const g = grammarFor(tok, { type: 'json_object' });
    fc.assert(
      fc.property(fc.nat(), (seed) => {
        const out = sample(g, seed, 200);
        const value: unknown = JSON.parse(out.text);
        return out.finished && typeof value === 'object' && value !== null && !Array.isArray(value);
      }),
      { numRuns: 40, seed: 15 },
    );
    t.pass('all objects');
  });

  t.test(`${tok.name}: every mask is exactly what accept() takes`, async (t) => {
    const vocab = vocabOf(tok);
    for (const [i, schema] of SCHEMAS.slice(0, 3).entries()) {
      const g = grammarFor(tok, format(schema));
      const ids = sample(g, 100 + i, 120).ids;
      const st = g.start();
      const row = new Float32Array(vocab.size);
      // Each state along a sampled path, checked against trying every id on a clone.
      for (let step = 0; step <= ids.length; step += tok.vocabType === 'byte_level' ? 1 : 7) {
        while (stepOf(st) < step) {
          st.accept(ids[stepOf(st)]!);
          advance(st);
        }
        row.fill(0);
        st.mask(row);
        for (let id = 0; id < vocab.size; id++) {
          const c = st.clone();
          let ok = true;
          try {
            c.accept(id);
          } catch {
            ok = false;
          }
          if (ok !== (row[id] === 0)) t.fail(`step ${step}: id ${id} mask says ${row[id] === 0}, accept says ${ok}`);
        }
      }
    }
    t.pass('masks match');
  });
}

// Steps taken by a state, tracked beside it (the state itself does not count).
const steps = new WeakMap<object, number>();
const stepOf = (st: object): number => steps.get(st) ?? 0;
const advance = (st: object): void => void steps.set(st, stepOf(st) + 1);
