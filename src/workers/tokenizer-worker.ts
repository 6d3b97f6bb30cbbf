// Tokenizer worker entry (see tokenizer-thread.ts): builds the tokenizer from the files the
// HTTP thread read and tokenizes the texts it is sent, one at a time, in arrival order.
import { workerData } from 'node:worker_threads';
import { TextTokenizer } from '../runtime/tokenizer.js';
import type { TokenizerCalls, TokenizerWorkerData } from './protocol.js';
import { Transfer, fatal, ready, serve } from './serve.js';

const { tokenizerJson, tokenizerConfig } = workerData as TokenizerWorkerData;

try {
  const tokenizer = new TextTokenizer(tokenizerJson, tokenizerConfig);
  serve<TokenizerCalls>({
    encode: (text) => {
      const ids = Int32Array.from(tokenizer.encode(text));
      return new Transfer(ids, [ids.buffer]);
    },
  });
  ready({});
} catch (err) {
  fatal(err);
}
