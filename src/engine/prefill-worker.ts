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
        // A prompt chunk needs only its last position's logits: sending every position's
        // would copy seqLen × vocabulary floats per chunk (64 × 32,000 × 4 B = 8 MB for a
        // 32k vocabulary) for nothing.
        const from = input.lastLogitsOnly ? input.seqLen - 1 : 0;
        const kept = input.seqLen - from;
        const logits = new Float32Array(input.batch * kept * decoder.vocabSize);
        for (let b = 0; b < input.batch; b++) {
          for (let s = from; s < input.seqLen; s++) logits.set(out.logits(b, s), (b * kept + s - from) * decoder.vocabSize);
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
