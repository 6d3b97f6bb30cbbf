// The tokenizer thread gives exactly the ids the HTTP thread's tokenizer gives, answers calls
// made together, and stops cleanly once the texts it was given are done.
import t from 'tap';
import { TokenizerThread } from '../../src/workers/tokenizer-thread.js';
import { readModelDir } from '../../src/runtime/model-dir.js';
import { TextTokenizer } from '../../src/runtime/tokenizer.js';
import { MODEL_DIR } from '../helpers/model.js';

const files = readModelDir(MODEL_DIR);
const local = new TextTokenizer(files.tokenizerJson, files.tokenizerConfig);
const thread = await TokenizerThread.start({ tokenizerJson: files.tokenizerJson, tokenizerConfig: files.tokenizerConfig });
t.teardown(() => thread.close());
// Varied text, long enough for any slice below: lines numbered, with multi-byte characters.
const corpus = Array.from({ length: 20_000 }, (_, i) => `ROMEO ${i}: But soft, what light through yonder window breaks? Ça, 東京 🌸\n`).join('');

t.test('the same ids as in-process, for any text', async (t) => {
  const texts = {
    empty: '',
    ascii: 'ROMEO:\nBut soft, what light through yonder window breaks?',
    unicode: 'Ça, déjà vu: 東京 🌸 👩‍👩‍👧',
    'special token text': 'JULIET:<|endoftext|>ROMEO:',
    'lone surrogate': 'a\uD800b',
    'a long text': corpus.slice(0, 200_000),
  };
  for (const [name, text] of Object.entries(texts)) t.same(await thread.encode(text), local.encode(text), name);
});

t.test('calls made together are all answered, each with its own ids', async (t) => {
  const texts = Array.from({ length: 20 }, (_, i) => corpus.slice(i * 5_000, i * 5_000 + 1_000 * (i + 1)));
  const got = await Promise.all(texts.map((text) => thread.encode(text)));
  t.same(
    got,
    texts.map((text) => local.encode(text)),
  );
});

t.test('close() lets the texts already sent finish, then refuses more', async (t) => {
  const own = await TokenizerThread.start({ tokenizerJson: files.tokenizerJson, tokenizerConfig: files.tokenizerConfig });
  const text = corpus.slice(0, 300_000);
  const pending = own.encode(text);
  const closed = own.close();
  t.notOk(own.alive, 'not alive once closing');
  t.same(await pending, local.encode(text), 'the call in flight is answered');
  await closed;
  await t.rejects(own.encode('x'), /not running/);
});
