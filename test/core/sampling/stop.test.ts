// Stop sequences arrive split across tokens in any way the model likes, so the matcher is
// checked both on hand-picked splits and against a brute-force reference on random chunkings,
// and end to end on real byte-level tokens coming out of the incremental detokenizer.

import { readFileSync } from 'node:fs';
import t from 'tap';
import fc from 'fast-check';
import { Tokenizer } from '@huggingface/tokenizers';
import { StopMatcher } from '../../../src/core/sampling/stop.js';
import { IncrementalDetokenizer, type TokenDecoder } from '../../../src/core/sampling/detokenizer.js';

const MODEL_DIR = new URL('../../../models/tiny-shakespeare/', import.meta.url);

function run(stops: readonly string[], chunks: readonly string[]) {
  const matcher = new StopMatcher(stops);
  const pieces: string[] = [];
  let stopped = false;
  for (const chunk of chunks) {
    const r = matcher.push(chunk);
    pieces.push(r.text);
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  const tail = stopped ? '' : matcher.flush();
  return { pieces, tail, stopped, text: pieces.join('') + tail };
}

t.test('no stops: text passes straight through', async (t) => {
  t.same(run([], ['a', 'b']).pieces, ['a', 'b']);
  t.same(run(['', ''], ['a', 'b']), { pieces: ['a', 'b'], tail: '', stopped: false, text: 'ab' }, 'empty stops ignored');
});

t.test('stop arriving as a single token', async (t) => {
  const m = new StopMatcher(['\n\n']);
  t.same(m.push('Hello'), { text: 'Hello', stopped: false });
  t.same(m.push('\n\n'), { text: '', stopped: true }, 'the stop text is not emitted');
  t.same(m.push('more'), { text: '', stopped: true }, 'nothing is emitted after a stop');
  t.equal(m.flush(), '');
});

t.test('text before the stop in the same push is emitted, text after it is not', async (t) => {
  const m = new StopMatcher(['END']);
  t.same(m.push('abcENDxyz'), { text: 'abc', stopped: true });
});

t.test('stop spanning several pushes', async (t) => {
  const r = run(['STOP'], ['x', 'S', 'T', 'O', 'Pyz']);
  t.same(r.pieces, ['x', '', '', '', '']);
  t.ok(r.stopped);
  t.equal(r.text, 'x', 'no part of the stop leaks');
  t.same(run(['STOP'], ['abcST', 'OPdef']).pieces, ['abc', '']);
});

t.test('held-back text is released once the partial match fails', async (t) => {
  const m = new StopMatcher(['STOP']);
  t.same(m.push('go ST'), { text: 'go ', stopped: false }, '"ST" could begin the stop');
  t.same(m.push('A'), { text: 'STA', stopped: false }, 'released as soon as it cannot');
  t.same(m.push('RS'), { text: 'R', stopped: false }, '"S" could begin the stop again');
  t.same(m.push('!'), { text: 'S!', stopped: false });
  t.equal(m.flush(), '');
});

t.test('flush returns the held-back tail', async (t) => {
  const m = new StopMatcher(['</s>']);
  t.same(m.push('the end </'), { text: 'the end ', stopped: false });
  t.equal(m.flush(), '</');
  t.equal(m.flush(), '', 'nothing twice');
});

t.test('only the longest possible partial match is held back', async (t) => {
  const m = new StopMatcher(['abcdef']);
  t.same(m.push('xxabcde'), { text: 'xx', stopped: false });
  t.same(m.push('g'), { text: 'abcdeg', stopped: false });
  t.same(new StopMatcher(['abc']).push('zzzzzzzzzzab'), { text: 'zzzzzzzzzz', stopped: false }, 'at most maxStopLength - 1 held');
});

t.test('multiple stops: the earliest occurrence wins', async (t) => {
  t.same(new StopMatcher(['world', 'lo']).push('hello world'), { text: 'hel', stopped: true });
  t.same(new StopMatcher(['lo', 'world']).push('hello world'), { text: 'hel', stopped: true }, 'order of stops does not matter');
  t.same(new StopMatcher(['bc', 'abcd']).push('xabcd'), { text: 'x', stopped: true }, 'a longer stop starting earlier wins');
  t.same(new StopMatcher(['ab', 'abc']).push('xabc'), { text: 'x', stopped: true }, 'same start');
  t.same(run(['bc', 'abcd'], ['xab', 'cd']).text, 'x', 'both completing in the same push');
  // A stop is acted on as soon as it completes: generation must not run on waiting to see
  // whether a longer stop that started earlier will complete too.
  t.same(run(['bc', 'abcd'], ['xabc', 'd']).text, 'xa', 'completed stop is not delayed');
  t.same(run(['USER:', 'ASSISTANT:'], ['Hi!\nUS', 'ER', ': hello']).text, 'Hi!\n');
});

t.test('repeated-prefix patterns', async (t) => {
  t.same(new StopMatcher(['aab']).push('aaab'), { text: 'a', stopped: true });
  t.same(run(['aab'], [...'aaab']).pieces, ['', '', 'a', ''], 'one character at a time');
  t.same(run(['aab'], [...'aaac']), { pieces: ['', '', 'a', 'aac'], tail: '', stopped: false, text: 'aaac' });
  t.same(run(['abab'], ['aba', 'bab']).text, '', 'overlapping self-match');
  t.same(run(['abac'], ['ababa', 'c']).text, 'ab');
  t.same(run(['aaaa'], ['aaa', 'b', 'aaa']), { pieces: ['', 'aaab', ''], tail: 'aaa', stopped: false, text: 'aaabaaa' });
});

t.test('non-ASCII stops', async (t) => {
  t.same(run(['世界'], ['你好', '世', '界!']).text, '你好');
  t.same(run(['🛑'], ['go ', '🛑', ' no']).text, 'go ');
  t.same(run(['👍🏽'], ['👍', '🏽']).pieces, ['', ''], 'a modifier sequence split across pushes');
  t.same(run(['👍🏽'], ['👍', '!']).text, '👍!');
});

// Reference semantics: after each push, the earliest occurrence of any stop in everything seen
// so far wins; without one, everything except the longest tail that could still begin a stop
// has been emitted.
function longestPartial(text: string, stops: readonly string[]): number {
  let best = 0;
  for (const stop of stops) {
    for (let k = Math.min(stop.length - 1, text.length); k > best; k--) {
      if (text.endsWith(stop.slice(0, k))) {
        best = k;
        break;
      }
    }
  }
  return best;
}

t.test('property: matches a brute-force reference on random chunkings', async (t) => {
  const alphabet = fc.constantFrom('a', 'b', 'c', 'é', '😀');
  const str = (min: number, max: number) => fc.array(alphabet, { minLength: min, maxLength: max }).map((a) => a.join(''));
  fc.assert(
    fc.property(fc.array(str(0, 5), { maxLength: 4 }), fc.array(str(0, 6), { maxLength: 20 }), (stops, chunks) => {
      const live = stops.filter((s) => s.length > 0);
      const maxLen = Math.max(0, ...live.map((s) => s.length));
      const m = new StopMatcher(stops);
      let seen = '';
      let emitted = '';
      for (const chunk of chunks) {
        seen += chunk;
        const r = m.push(chunk);
        emitted += r.text;
        const starts = live.map((s) => seen.indexOf(s)).filter((i) => i >= 0);
        if (starts.length > 0) {
          return r.stopped && emitted === seen.slice(0, Math.min(...starts));
        }
        if (r.stopped) return false;
        const held = seen.length - emitted.length;
        if (emitted !== seen.slice(0, held === 0 ? undefined : -held)) return false;
        if (held !== longestPartial(seen, live) || held > Math.max(0, maxLen - 1)) return false;
      }
      return emitted + m.flush() === seen;
    }),
    { numRuns: 5000 },
  );
  t.pass('reference semantics hold');
});

t.test('end to end: byte tokens -> detokenizer -> stop matcher', async (t) => {
  const readJson = (name: string): object => JSON.parse(readFileSync(new URL(name, MODEL_DIR), 'utf8')) as object;
  const tokenizer = new Tokenizer(readJson('tokenizer.json'), readJson('tokenizer_config.json'));
  const decoder: TokenDecoder = { decode: (ids) => tokenizer.decode([...ids], { skip_special_tokens: true }) };

  function generate(text: string, stops: string[]) {
    const detok = new IncrementalDetokenizer(decoder);
    const matcher = new StopMatcher(stops);
    const pieces: string[] = [];
    for (const id of tokenizer.encode(text).ids) {
      const r = matcher.push(detok.push(id));
      pieces.push(r.text);
      if (r.stopped) return { text: pieces.join(''), stopped: true, pieces };
    }
    const rest = matcher.push(detok.flush());
    pieces.push(rest.text);
    if (!rest.stopped) pieces.push(matcher.flush());
    return { text: pieces.join(''), stopped: rest.stopped, pieces };
  }

  const shakespeare = generate('JULIET:\nO Romeo, Romeo!\n\nROMEO:\nShall I hear more?', ['\n\n', 'ROMEO:']);
  t.same([shakespeare.text, shakespeare.stopped], ['JULIET:\nO Romeo, Romeo!', true], 'stop spanning two byte tokens');
  t.same(generate('Hello 世界!', ['界']).text, 'Hello 世', 'multi-byte stop spanning three tokens');
  t.same(generate('ok 👍🏽 fine', ['🏽']).text, 'ok 👍', 'stop inside an emoji modifier sequence');
  const noStop = generate('Good night, good night!', ['Parting']);
  t.same([noStop.text, noStop.stopped], ['Good night, good night!', false], 'no stop: everything emitted');
  t.notOk(noStop.pieces.some((p) => p.includes('\uFFFD')));
});
