// How far a quantized graph's next-token distributions are from the float32 graph's: the same
// fixed token stream goes through each file in one forward pass from an empty cache (kvserve's
// decoder, so the kernels are the ones that serve), and at every position we compare the
// softmax of the logits: top-1 agreement, KL(float32 ‖ quantized) in nats, and the float32
// distribution's own entropy — an untrained model's is close to ln(vocabulary), and a flat
// distribution makes top-1 a near-tie that tiny errors flip, so both are reported together.
import { allocKv } from '../../src/core/kv/layout.js';
import { loadModel } from '../../src/runtime/load-model.js';
import { round2 } from './interleave.js';
import { argmax, klDivergence, logSoftmax } from './distributions.js';

export interface Fidelity {
  file: string;
  positions: number;
  top1_agreement: number;
  kld_mean: number;
  kld_max: number;
}

async function allLogits(dir: string, file: string, ids: number[]): Promise<Float32Array[]> {
  const m = await loadModel(dir, { onnxFile: file });
  try {
    const { layers, dtype } = m.decoder.layout;
    const out = await m.decoder.forward({
      batch: 1,
      seqLen: ids.length,
      pastLength: 0,
      inputIds: ids,
      positionIds: ids.map((_, i) => i),
      past: Array.from({ length: 2 * layers }, () => allocKv(dtype, 0)),
    });
    return ids.map((_, i) => out.logits(0, i).slice());
  } finally {
    await m.decoder.close();
  }
}

/** Compares each of `files` with `reference` over `ids`; also returns the reference's mean entropy (nats). */
export async function measureFidelity(
  dir: string,
  reference: string,
  files: string[],
  ids: number[],
): Promise<{ entropy_mean: number; vocab_ln: number; results: Fidelity[] }> {
  const ref = (await allLogits(dir, reference, ids)).map(logSoftmax);
  let entropy = 0;
  for (const lp of ref) for (const v of lp) entropy -= Math.exp(v) * v;
  const results: Fidelity[] = [];
  for (const file of files) {
    const rows = (await allLogits(dir, file, ids)).map(logSoftmax);
    let agree = 0;
    let sum = 0;
    let max = 0;
    rows.forEach((lq, i) => {
      const lp = ref[i]!;
      if (argmax(lq) === argmax(lp)) agree++;
      const kl = klDivergence(lp, lq);
      sum += kl;
      max = Math.max(max, kl);
    });
    results.push({
      file,
      positions: ids.length,
      top1_agreement: agree / ids.length,
      kld_mean: Number((sum / ids.length).toPrecision(3)),
      kld_max: Number(max.toPrecision(3)),
    });
  }
  return { entropy_mean: round2(entropy / ids.length), vocab_ln: round2(Math.log(ref[0]!.length)), results };
}
