// Prefill worker entry (see prefill-thread.ts): opens the model on one intra-op thread and
// runs the forward calls it is sent, one at a time, in arrival order.
import { workerData } from 'node:worker_threads';
import type { KvData } from '../core/kv/layout.js';
import { OnnxDecoder } from '../runtime/onnx-decoder.js';
import type { PrefillCalls, PrefillWorkerData } from './protocol.js';
import { Transfer, fatal, ready, serve } from './serve.js';

const { onnxPath, vocabSize, prepack } = workerData as PrefillWorkerData;

try {
  const decoder = await OnnxDecoder.load(onnxPath, { threads: 1, decodeThreads: 1, prepack }, vocabSize);
  serve<PrefillCalls>(
    {
      forward: async (input) => {
        const out = await decoder.forward(input);
        // A prompt chunk needs only its last position's logits: sending every position's
        // would copy seqLen × vocabulary floats per chunk for nothing.
        const from = input.lastLogitsOnly ? input.seqLen - 1 : 0;
        const kept = input.seqLen - from;
        const logits = new Float32Array(input.batch * kept * decoder.vocabSize);
        for (let b = 0; b < input.batch; b++) {
          for (let s = from; s < input.seqLen; s++) logits.set(out.logits(b, s), (b * kept + s - from) * decoder.vocabSize);
        }
        const newKv: KvData[] = out.newKv.map((t) => (t.byteOffset === 0 && t.byteLength === t.buffer.byteLength ? t : t.slice()));
        return new Transfer({ logits, newKv }, [logits.buffer, ...newKv.map((t) => t.buffer as ArrayBuffer)]);
      },
    },
    { onClose: () => decoder.close() },
  );
  ready({ layout: decoder.layout, vocabSize: decoder.vocabSize });
} catch (err) {
  fatal(err);
}
