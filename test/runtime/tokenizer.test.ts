// TextTokenizer remembers each token's own text (the streaming detokenizer asks for it on
// nearly every step): what it returns must be what the tokenizer library decodes, the first
// time and every time after, for every id and for sequences mixing those ids.
import { readFileSync } from 'node:fs';
import t from 'tap';
import fc from 'fast-check';
import { Tokenizer } from '@huggingface/tokenizers';
import { TextTokenizer } from '../../src/runtime/tokenizer.js';

const MODEL_DIR = new URL('../../models/tiny-shakespeare/', import.meta.url);
const readJson = (name: string): Record<string, unknown> => JSON.parse(readFileSync(new URL(name, MODEL_DIR), 'utf8')) as Record<string, unknown>;
const json = readJson('tokenizer.json');
const config = readJson('tokenizer_config.json');
const reference = new Tokenizer(json, config);
const decodeRef = (ids: number[]): string => reference.decode(ids, { skip_special_tokens: true });

t.test('one token: the library’s text, first and later calls alike', async (t) => {
  const tok = new TextTokenizer(json, config);
  t.equal(tok.vocabSize, 257);
  const ids = Array.from({ length: tok.vocabSize }, (_, i) => i);
  const first = ids.map((id) => tok.decode([id]));
  const again = ids.map((id) => tok.decode([id]));
  const expected = ids.map((id) => decodeRef([id]));
  t.same(first, expected, 'first call');
  t.same(again, expected, 'remembered');
  t.equal(tok.decode([256]), '', 'the special end-of-text token decodes to nothing');
  t.equal(tok.decode([0xe2]), '\uFFFD', 'a lone lead byte is an incomplete character');
});

t.test('sequences decode as the library does, whatever single ids were decoded before', async (t) => {
  const tok = new TextTokenizer(json, config);
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 256 }), { minLength: 1, maxLength: 12 }), (ids) => {
      for (const id of ids) if (tok.decode([id]) !== decodeRef([id])) return false;
      return tok.decode(ids) === decodeRef(ids);
    }),
    { numRuns: 500 },
  );
  t.pass('500 random sequences');
});

t.test('maxTokenChars bounds how few tokens a text can be', async (t) => {
  const tok = new TextTokenizer(json, config);
  // Byte-level: every byte is a token of one character, but the end-of-text token matches
  // its 13-character literal in text.
  t.equal(tok.maxTokenChars, '<|endoftext|>'.length);
  t.equal(tok.encode('<|endoftext|>').length, 1, 'the literal is one token');
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.string({ unit: 'grapheme' }), fc.constant('<|endoftext|>'))), (parts) => {
      const text = parts.join('');
      return tok.encode(text).length >= text.length / tok.maxTokenChars;
    }),
    { numRuns: 500 },
  );
});
