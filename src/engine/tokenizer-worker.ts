// Tokenizer worker entry (see tokenizer-thread.ts): builds the tokenizer from the files the
// HTTP thread read and tokenizes the texts it is sent, one at a time, in arrival order.
import { parentPort, workerData } from 'node:worker_threads';
import { TextTokenizer } from '../runtime/tokenizer.js';
import type { FromTokenizer, ToTokenizer, TokenizerWorkerData } from './tokenizer-thread.js';

const port = parentPort!;
const post = (msg: FromTokenizer, transfer: ArrayBuffer[] = []): void => port.postMessage(msg, transfer);
const { tokenizerJson, tokenizerConfig } = workerData as TokenizerWorkerData;

try {
  const tokenizer = new TextTokenizer(tokenizerJson, tokenizerConfig);
  port.on('message', (msg: ToTokenizer) => {
    if (msg.type === 'close') {
      port.close();
      return;
    }
    try {
      const ids = Int32Array.from(tokenizer.encode(msg.text));
      post({ type: 'ids', id: msg.id, ids }, [ids.buffer]);
    } catch (err) {
      post({ type: 'error', id: msg.id, message: (err as Error).message });
    }
  });
  post({ type: 'ready' });
} catch (err) {
  post({ type: 'fatal', message: (err as Error).message });
}
