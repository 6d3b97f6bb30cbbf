// Edge cases of the byte automaton seen through tokens: tokens that span several JSON tokens,
// escapes split across tokens, UTF-8 characters split across byte tokens, number and literal
// boundaries, the whitespace bound, and when EOS is allowed.
import t from 'tap';
import { compileGrammar, type GrammarState, type ResponseFormat } from '../../../../src/core/sampling/grammar/index.js';
import type { TokenVocab } from '../../../../src/core/sampling/grammar/vocab.js';
import { byteTokens, customVocab, decode, idOf } from './sample.js';
import { llama2, vocabOf } from './tokenizers.js';

const schemaFormat = (schema: unknown): ResponseFormat => ({ type: 'json_schema', json_schema: { name: 't', schema, strict: true } });

/** Ids the state allows now. */
function allowed(st: GrammarState, vocab: TokenVocab): Set<number> {
  const row = new Float32Array(vocab.size);
  st.mask(row);
  const out = new Set<number>();
  for (const [i, v] of row.entries()) if (v !== -Infinity) out.add(i);
  return out;
}

function feed(st: GrammarState, vocab: TokenVocab, tokens: readonly (string | number[])[]): void {
  for (const tok of tokens) st.accept(idOf(vocab, tok));
}

const TWO_STRINGS = { type: 'object', properties: { a: { type: 'string' }, b: { type: 'string' } }, required: ['a', 'b'], additionalProperties: false };

t.test('one token may close a string, add the comma and open the next key and value', async (t) => {
  const vocab = customVocab([...byteTokens(), '","b":"', '","c":"', '"}', '{"a":"']);
  const st = compileGrammar(schemaFormat(TWO_STRINGS), vocab)!.start();
  feed(st, vocab, ['{"a":"', 'x']);
  const ok = allowed(st, vocab);
  t.ok(ok.has(idOf(vocab, '","b":"')), 'the token that crosses into the next member is allowed');
  t.notOk(ok.has(idOf(vocab, '","c":"')), 'but not with an undeclared key');
  t.notOk(ok.has(idOf(vocab, '"}')), 'nor closing the object before the required b');
  feed(st, vocab, ['","b":"', 'y', '"}']);
  t.ok(st.complete);
  t.same(allowed(st, vocab), new Set(vocab.eosIds), 'only EOS once complete');
});

t.test('escapes inside tokens and split across tokens', async (t) => {
  const vocab = customVocab([...byteTokens(), '\\"', '\\\\', '\\n', '\\u00', 'e9', '\\x', 'a\\', '\\u12g']);
  const g = compileGrammar(schemaFormat({ type: 'string' }), vocab)!;
  const st = g.start();
  feed(st, vocab, ['"', '\\"', '\\\\', '\\n', '\\u00', 'e9', 'a\\']);
  const ok = allowed(st, vocab);
  t.ok(ok.has(idOf(vocab, 't')) && ok.has(idOf(vocab, '"')), 'a token ending in a backslash leaves an escape open');
  t.notOk(ok.has(idOf(vocab, 'x')), 'that only escape letters may finish');
  feed(st, vocab, ['t', '"']);
  t.notOk(allowed(g.start(), vocab).has(idOf(vocab, '\\x')), 'no token may start a value with a backslash');
  const st2 = g.start();
  feed(st2, vocab, ['"']);
  const inString = allowed(st2, vocab);
  t.notOk(inString.has(idOf(vocab, '\\x')), '\\x is not a JSON escape');
  t.notOk(inString.has(idOf(vocab, '\\u12g')), '\\u takes four hex digits');
  t.notOk(inString.has(idOf(vocab, [0x0a])), 'a raw newline must be escaped');
  t.ok(st.complete);
});

t.test('the decoded escapes parse to the intended string', async (t) => {
  const vocab = customVocab([...byteTokens(), '\\"', '\\\\', '\\n', '\\u00', 'e9']);
  const st = compileGrammar(schemaFormat({ type: 'string' }), vocab)!.start();
  const toks = ['"', '\\"', '\\\\', '\\n', '\\u00', 'e9', '"'];
  feed(st, vocab, toks);
  t.equal(
    JSON.parse(
      decode(
        vocab,
        toks.map((x) => idOf(vocab, x)),
      ),
    ),
    '"\\\né',
  );
});

t.test('multi-byte UTF-8 characters split across byte tokens', async (t) => {
  const vocab = customVocab([...byteTokens(), [0xf0, 0x9f], [0x98, 0x80]]);
  const g = compileGrammar(schemaFormat({ type: 'string' }), vocab)!;
  const st = g.start();
  feed(st, vocab, ['"', [0xc3]]);
  let ok = allowed(st, vocab);
  t.ok(ok.has(idOf(vocab, [0xa9])), 'a continuation byte completes é');
  t.notOk(ok.has(idOf(vocab, 'A')), 'ASCII cannot interrupt a character');
  t.notOk(ok.has(idOf(vocab, '"')), 'nor can the closing quote');
  feed(st, vocab, [[0xa9], [0xe0]]);
  ok = allowed(st, vocab);
  t.notOk(ok.has(idOf(vocab, [0x80])), 'overlong E0 80 is not UTF-8');
  t.ok(ok.has(idOf(vocab, [0xa0])));
  feed(st, vocab, [[0xa4], [0xbf], [0xf0, 0x9f], [0x98, 0x80], '"']);
  const text = decode(
    vocab,
    [0x22, 0xc3, 0xa9, 0xe0, 0xa4, 0xbf].map((b) => idOf(vocab, [b])).concat([idOf(vocab, [0xf0, 0x9f]), idOf(vocab, [0x98, 0x80]), idOf(vocab, '"')]),
  );
  t.equal(JSON.parse(text), 'é\u093f😀');
  const fresh = g.start();
  feed(fresh, vocab, ['"']);
  ok = allowed(fresh, vocab);
  for (const b of [0x80, 0xbf, 0xc0, 0xc1, 0xf5, 0xff]) t.notOk(ok.has(idOf(vocab, [b])), `byte ${b.toString(16)} cannot start a character`);
  feed(fresh, vocab, [[0xed]]);
  t.notOk(allowed(fresh, vocab).has(idOf(vocab, [0xa0])), 'ED A0 would encode a surrogate');
});

t.test('Llama byte-fallback tokens spell an emoji inside a string', async (t) => {
  const vocab = vocabOf(llama2());
  const st = compileGrammar(schemaFormat({ type: 'object', properties: { s: { type: 'string' } }, required: ['s'] }), vocab)!.start();
  const ids = ['{"', 's', '":', '▁"', '<0xF0>', '<0x9F>', '<0x98>', '<0x80>', '"}'].map((tok) => llama2().json.model.vocab[tok]!);
  for (const id of ids.slice(0, 5)) st.accept(id);
  t.notOk(allowed(st, vocab).has(llama2().json.model.vocab['"}']!), 'no closing mid-character');
  for (const id of ids.slice(5)) st.accept(id);
  t.ok(st.complete);
  t.same(JSON.parse(decode(vocab, ids)), { s: '😀' });
});

t.test('EOS is masked until the document is complete; accept rejects what the mask forbids', async (t) => {
  const vocab = customVocab(byteTokens());
  const [eos] = vocab.eosIds;
  const st = compileGrammar({ type: 'json_object' }, vocab)!.start();
  t.notOk(allowed(st, vocab).has(eos!), 'not before anything');
  t.throws(() => st.accept(eos!), /not finished/);
  t.throws(() => st.accept(idOf(vocab, 'x')), /not allowed/);
  feed(st, vocab, ['{']);
  t.notOk(allowed(st, vocab).has(eos!), 'not inside the object');
  t.notOk(st.complete);
  const clone = st.clone();
  feed(st, vocab, ['}']);
  t.ok(st.complete);
  t.same(allowed(st, vocab), new Set([eos]), 'only EOS after the closing brace');
  t.notOk(clone.complete, 'a clone moves on its own');
  st.accept(eos!);
  t.throws(() => st.mask(new Float32Array(vocab.size)), /already accepted EOS/);
});

t.test('a top-level number may end at EOS (it is never "complete": more digits could follow)', async (t) => {
  const vocab = customVocab(byteTokens());
  const st = compileGrammar(schemaFormat({ type: 'number' }), vocab)!.start();
  feed(st, vocab, ['-']);
  t.notOk(st.canEnd);
  feed(st, vocab, ['1']);
  t.ok(st.canEnd);
  t.notOk(st.complete);
  t.ok(allowed(st, vocab).has(vocab.eosIds[0]!));
});

t.test('number boundaries', async (t) => {
  const vocab = customVocab(byteTokens());
  const obj = (type: string): GrammarState => compileGrammar(schemaFormat({ type: 'object', properties: { n: { type } }, required: ['n'] }), vocab)!.start();
  const after = (type: string, text: string): Set<number> => {
    const st = obj(type);
    feed(st, vocab, [...`{"n":${text}`]);
    return allowed(st, vocab);
  };
  const has = (set: Set<number>, ch: string): boolean => set.has(idOf(vocab, ch));
  t.notOk(has(after('number', '0'), '1'), 'no leading zeros');
  t.notOk(has(after('number', '-'), '}'), 'a sign alone is no number');
  t.notOk(has(after('number', '1.'), '}'), 'a fraction needs digits');
  t.notOk(has(after('number', '1e'), '}'), 'an exponent needs digits');
  t.ok(has(after('number', '1e+5'), '}'));
  t.notOk(has(after('integer', '1'), '.'), 'integers have no fraction');
  t.notOk(has(after('integer', '1'), 'e'), 'nor an exponent');
  t.notOk(has(after('integer', '1'.repeat(15)), '1'), 'integers stop at 15 digits (exact in a double)');
  t.notOk(has(after('number', '1e99'), '9'), 'exponents stop at 2 digits (finite)');
});

t.test('an enum value that is a prefix of another', async (t) => {
  const vocab = customVocab(byteTokens());
  const st = compileGrammar(schemaFormat({ type: 'array', items: { enum: [1, 12, 'ab'] } }), vocab)!.start();
  feed(st, vocab, ['[', '1']);
  const ok = allowed(st, vocab);
  t.ok(ok.has(idOf(vocab, '2')) && ok.has(idOf(vocab, ']')) && ok.has(idOf(vocab, ',')));
  t.notOk(ok.has(idOf(vocab, '3')));
  feed(st, vocab, ['2']);
  t.notOk(allowed(st, vocab).has(idOf(vocab, '3')), '123 is not in the enum');
});

t.test('whitespace runs are bounded', async (t) => {
  const vocab = customVocab(byteTokens());
  const st = compileGrammar({ type: 'json_object' }, vocab, { maxWhitespace: 2 })!.start();
  feed(st, vocab, [' ', '\n', '{', ' ', ' ']);
  const ok = allowed(st, vocab);
  t.notOk(ok.has(idOf(vocab, ' ')) || ok.has(idOf(vocab, '\n')), 'a third whitespace byte is refused');
  t.ok(ok.has(idOf(vocab, '}')));
  t.throws(() => compileGrammar({ type: 'json_object' }, vocab, { maxWhitespace: 0 })!.start().accept(idOf(vocab, ' ')));
});
