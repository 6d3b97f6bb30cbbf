// Prefill worker entry (see prefill-thread.ts): opens the model on one intra-op thread and
// runs the forward calls it is sent, one at a time, in arrival order.
import { parentPort, workerData } from 'node:worker_threads';
import type { KvData } from '../core/kv/layout.js';
import { OnnxDecoder } from '../runtime/onnx-decoder.js';
import type { FromPrefill, PrefillWorkerData, ToPrefill } from './prefill-thread.js';

const port = parentPort!;
const post = (msg: FromPrefill, transfer: ArrayBuffer[] = []): void => port.postMessage(msg, transfer);
const { onnxPath, vocabSize } = workerData as PrefillWorkerData;

try {
  const decoder = await OnnxDecoder.load(onnxPath, { threads: 1, decodeThreads: 1 }, vocabSize);
  let queue = Promise.resolve();
  port.on('message', (msg: ToPrefill) => {
    if (msg.type === 'close') {
      // After the calls already received: the thread ends by itself once the port closes.
      queue = queue.then(async () => {
        await decoder.close();
        port.close();
      });
      return;
    }
    queue = queue.then(async () => {
      try {
        const { input } = msg;
        const out = await decoder.forward(input);
        const rows = input.batch * input.seqLen;
        const logits = new Float32Array(rows * decoder.vocabSize);
        for (let b = 0; b < input.batch; b++) {
          for (let s = 0; s < input.seqLen; s++) logits.set(out.logits(b, s), (b * input.seqLen + s) * decoder.vocabSize);
        }
        const newKv: KvData[] = out.newKv.map((t) => (t.byteOffset === 0 && t.byteLength === t.buffer.byteLength ? t : t.slice()));
        post({ type: 'result', id: msg.id, logits, newKv }, [logits.buffer, ...newKv.map((t) => t.buffer as ArrayBuffer)]);
      } catch (err) {
        post({ type: 'error', id: msg.id, message: (err as Error).message });
      }
    });
  });
  post({ type: 'ready', layout: decoder.layout, vocabSize: decoder.vocabSize });
} catch (err) {
  post({ type: 'fatal', message: (err as Error).message });
}
