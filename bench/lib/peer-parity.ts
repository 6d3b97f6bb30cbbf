// Same weights, same greedy tokens? kvserve's decoder (the ONNX graph through onnxruntime-node)
// and llama.cpp (node-llama-cpp on the GGUF tools/gguf/convert.ts wrote from that graph) are fed
// the same token ids, tokenizers bypassed, and their greedy continuations compared token by
// token. Float arithmetic differs (operator order, fused kernels), so a near-tie can flip: at the
// first divergence we report kvserve's own logit gap between the two candidates.
import { getLlama, type Llama, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { allocKv, type KvData } from '../../src/core/kv/layout.js';
import { type LoadedModel, loadModel } from '../../src/runtime/load-model.js';

export interface ParityCase {
  promptTokens: number;
  kvserve: number[];
  nodeLlamaCpp: number[];
  /** Index of the first generated token that differs; null when all agree. */
  firstDivergence: number | null;
  /** At the first divergence: kvserve's logit of its token minus its logit of llama.cpp's token. */
  logitGap: number | null;
}

export interface ParityResult {
  prompts: number;
  tokens: number;
  identical: number;
  cases: ParityCase[];
}

export interface ParityOptions {
  modelDir: string;
  gguf: string;
  /** Prompts as text: kvserve's tokenizer encodes each once, and both engines get those ids. */
  prompts: string[];
  tokens: number;
  /** ONNX file inside modelDir (default: discovered, onnx/model.onnx for kvserve's exports). */
  onnxFile?: string;
  /** llama.cpp's KV cache element type; F32 matches the float32 graph's cache. */
  kvType?: 'F32' | 'F16';
}

const argmax = (row: Float32Array): number => {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
};

/** kvserve's greedy tokens: one forward over the prompt, then one token per step over a growing cache. */
export async function kvserveGreedy(model: LoadedModel, prompt: number[], tokens: number): Promise<{ ids: number[]; logits: Float32Array[] }> {
  const { layers, kvHeads, headDim, dtype } = model.decoder.layout;
  let past: KvData[] = Array.from({ length: 2 * layers }, () => allocKv(dtype, 0));
  let pastLength = 0;
  let input = prompt;
  const ids: number[] = [];
  const logits: Float32Array[] = [];
  while (ids.length < tokens) {
    const out = await model.decoder.forward({
      batch: 1,
      seqLen: input.length,
      pastLength,
      inputIds: input,
      positionIds: input.map((_, i) => pastLength + i),
      past,
    });
    const row = out.logits(0, input.length - 1).slice();
    logits.push(row);
    ids.push(argmax(row));
    // Append the new keys/values ([1, heads, n, dim]) to the cache ([1, heads, pastLength, dim]).
    const total = pastLength + input.length;
    past = past.map((old, k) => {
      const next = allocKv(dtype, kvHeads * total * headDim);
      const fresh = out.newKv[k]!;
      for (let h = 0; h < kvHeads; h++) {
        next.set(old.subarray(h * pastLength * headDim, (h + 1) * pastLength * headDim) as never, h * total * headDim);
        next.set(fresh.subarray(h * input.length * headDim, (h + 1) * input.length * headDim) as never, (h * total + pastLength) * headDim);
      }
      return next;
    });
    pastLength = total;
    input = [ids.at(-1)!];
  }
  return { ids, logits };
}

/** llama.cpp's greedy tokens for the same ids (temperature 0: argmax, no penalties). */
export async function llamaCppGreedy(llama: Llama, gguf: string, prompts: number[][], tokens: number, kvType: 'F32' | 'F16'): Promise<number[][]> {
  const model = await llama.loadModel({ modelPath: gguf });
  const longest = Math.max(...prompts.map((p) => p.length)) + tokens;
  const context = await model.createContext({
    contextSize: longest,
    sequences: 1,
    // node-llama-cpp's default here is 4 threads on 2 cores, where llama.cpp's spinning threads crawl.
    threads: 1,
    experimentalKvCacheKeyType: kvType,
    experimentalKvCacheValueType: kvType,
  });
  try {
    const results: number[][] = [];
    for (const prompt of prompts) {
      const sequence = context.getSequence();
      const ids: number[] = [];
      for await (const token of sequence.evaluate(prompt as Token[], { temperature: 0 })) {
        ids.push(token);
        if (ids.length >= tokens) break;
      }
      await sequence.dispose();
      results.push(ids);
    }
    return results;
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

export async function checkPeerParity(o: ParityOptions): Promise<ParityResult> {
  const model = await loadModel(o.modelDir, o.onnxFile ? { onnxFile: o.onnxFile } : {});
  const prompts = o.prompts.map((p) => model.tokenizer.encode(p));
  const ours: { ids: number[]; logits: Float32Array[] }[] = [];
  try {
    for (const p of prompts) ours.push(await kvserveGreedy(model, p, o.tokens));
  } finally {
    await model.decoder.close();
  }
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const theirs = await llamaCppGreedy(llama, o.gguf, prompts, o.tokens, o.kvType ?? 'F32');
  await llama.dispose();
  const cases = prompts.map((p, i): ParityCase => {
    const a = ours[i]!.ids;
    const b = theirs[i]!;
    const at = a.findIndex((t, j) => t !== b[j]);
    const firstDivergence = at >= 0 ? at : b.length < a.length ? b.length : null;
    const row = firstDivergence !== null ? ours[i]!.logits[firstDivergence] : undefined;
    const peerToken = firstDivergence !== null ? b[firstDivergence] : undefined;
    return {
      promptTokens: p.length,
      kvserve: a,
      nodeLlamaCpp: b,
      firstDivergence,
      logitGap: row && peerToken !== undefined ? row[a[firstDivergence!]!]! - row[peerToken]! : null,
    };
  });
  return { prompts: prompts.length, tokens: o.tokens, identical: cases.filter((c) => c.firstDivergence === null).length, cases };
}
