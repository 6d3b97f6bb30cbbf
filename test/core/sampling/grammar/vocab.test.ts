// What each token id writes, read off real tokenizer.json files, and the token trie built from it.
import t from 'tap';
import { tokenVocab } from '../../../../src/core/sampling/grammar/index.js';
import { llama2, shakespeare, vocabOf } from './tokenizers.js';

const text = (b: Uint8Array | null | undefined): string | null => (b == null ? null : Buffer.from(b).toString('latin1'));

t.test('byte-level BPE: GPT-2 stand-in characters map back to bytes', async (t) => {
  const tok = shakespeare();
  const vocab = vocabOf(tok);
  t.equal(vocab.size, 257);
  t.equal(text(vocab.bytes[tok.json.model.vocab.Ġ!]), ' ');
  t.equal(text(vocab.bytes[tok.json.model.vocab.Ċ!]), '\n');
  t.same([...vocab.bytes[tok.json.model.vocab.Ã!]!], [0xc3], 'a lone UTF-8 lead byte');
  t.equal(vocab.bytes[256], null, 'the special end-of-text token writes nothing');
});

t.test('SentencePiece with byte fallback: ▁ is a space, <0xNN> one byte, specials nothing', async (t) => {
  const tok = llama2();
  const vocab = vocabOf(tok);
  const id = (s: string): number => tok.json.model.vocab[s]!;
  t.equal(vocab.size, 32000);
  t.equal(text(vocab.bytes[id('▁the')]), ' the');
  t.same([...vocab.bytes[id('<0x0A>')]!], [0x0a]);
  t.same([...vocab.bytes[id('<0xE2>')]!], [0xe2]);
  t.same(Buffer.from(vocab.bytes[id('▁über')] ?? []).toString('utf8'), ' über');
  for (const special of [0, 1, 2]) t.equal(vocab.bytes[special], null);
});

t.test('the trie holds every usable id exactly once, under its own bytes', async (t) => {
  for (const tok of [shakespeare(), llama2()]) {
    const { trie, bytes } = vocabOf(tok);
    const seen = new Map<number, string>();
    const prefix: number[] = [];
    for (let i = 1; i < trie.nodes; i++) {
      prefix.length = trie.depth[i]! - 1;
      prefix.push(trie.byte[i]!);
      for (let k = trie.idStart[i]!; k < trie.idStart[i + 1]!; k++) seen.set(trie.ids[k]!, Buffer.from(prefix).toString('latin1'));
    }
    const usable = bytes.flatMap((b, id) => (b === null ? [] : [id]));
    t.equal(seen.size, usable.length, tok.name);
    t.ok(
      usable.every((id) => seen.get(id) === text(bytes[id])),
      `${tok.name}: ids sit at their bytes`,
    );
  }
});

t.test('a decoder this module cannot read is refused by name', async (t) => {
  const json = { ...shakespeare().json, decoder: { type: 'WordPiece', prefix: '##' } };
  t.throws(() => tokenVocab(json, [256]), /unsupported tokenizer decoder for constrained decoding: WordPiece/);
});
