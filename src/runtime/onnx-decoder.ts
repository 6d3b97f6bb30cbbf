// The only module that talks to onnxruntime-node: loads a decoder graph, discovers its KV
// layout from the graph's own inputs and outputs, and runs one forward step.
//
// Two graph forms are served. kvserve's exports return in present.* only the new tokens'
// keys and values (the engine keeps the cache); Hugging Face Optimum exports return past
// and new concatenated, from which the new part is cut here. Same inputs, same results:
// the first form just skips copying the whole cache twice per step (tools/llama.py).
// Either form also gets an input that limits the output projection to the last position
// when a call reads no other (onnx/last-logits.ts): prompt chunks.
import * as ort from 'onnxruntime-node';
import type { DecoderModel, ForwardInput, ForwardOutput } from '../core/model.js';
import type { KvData, KvDType, KvLayout } from '../core/kv/layout.js';
import { halfArrayToFloat32 } from '../core/float16.js';
import { ModelLoadError } from './model-dir.js';
import { LOGITS_FROM } from './onnx/last-logits.js';
import { servedModel } from './onnx/new-tokens-only.js';
import { usableCpus } from './threads.js';

const firstLine = (err: unknown): string => String((err as Error).message ?? err).split('\n')[0]!;

export interface SessionOptions {
  /** Threads inside one operator for steps of many tokens (prefill); default: the number of cores. */
  threads?: number | undefined;
  /** Threads for steps of few tokens (decode); default 1. */
  decodeThreads?: number | undefined;
  /** Prepacked weights for the GEMM kernels (ORT_PREPACK); default true. */
  prepack?: boolean | undefined;
}

/**
 * Steps of at least this many tokens (batch × sequence) run on the multi-threaded session:
 * prefill chunks and decode batches of 8 or more gain from more threads, while a small decode
 * step runs as fast on one and leaves the other cores to the HTTP thread (docs/benchmarks.md).
 */
export const PREFILL_MIN_TOKENS = 8;

const PAST_KEY = /^past_key_values\.(\d+)\.key$/;

/**
 * The onnxruntime session options kvserve runs with (benchmarks reuse them for a fair baseline).
 * `prepack`: onnxruntime lays each MatMul weight out for its GEMM kernels and frees the stored
 * copy. Without it (ORT_PREPACK=0) prefill is ~25–40 % and decode ~17–20 % slower; it saves
 * memory only where malloc keeps the freed copies resident (src/main.ts: MALLOC_MMAP_THRESHOLD_).
 */
export function sessionOptions(threads: number = usableCpus(), prepack = true): ort.InferenceSession.SessionOptions {
  // Multi-threaded sessions spin-wait between operators instead of sleeping (waking a sleeping
  // thread for each of a step's ~100 small operators cost more than it saved), and stop
  // spinning when a run returns (force_spinning_stop): otherwise they spun on through the
  // scheduler's work and the HTTP thread's writes, on a core those needed. One-thread sessions
  // have nothing to spin. Figures: docs/benchmarks.md.
  const spin = threads > 1;
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: spin ? '1' : '0' }, force_spinning_stop: spin ? '1' : '0', disable_prepacking: prepack ? '0' : '1' } },
  };
}

interface GraphInfo {
  layout: KvLayout;
  vocabSize: number | undefined;
  hasPositionIds: boolean;
  hasAttentionMask: boolean;
}

function discover(session: ort.InferenceSession, file: string): GraphInfo {
  const inputs = new Map(session.inputMetadata.map((m) => [m.name, m]));
  const outputs = new Map(session.outputMetadata.map((m) => [m.name, m]));
  if (!inputs.has('input_ids')) throw new ModelLoadError(file, 'graph has no input_ids input: not a decoder');
  if (!outputs.has('logits')) throw new ModelLoadError(file, 'graph has no logits output: not a decoder');
  const layers = [...inputs.keys()].filter((n) => PAST_KEY.test(n)).length;
  if (layers === 0) {
    throw new ModelLoadError(file, 'graph has no past_key_values.{i}.key inputs: exported without KV cache');
  }
  const first = inputs.get('past_key_values.0.key');
  if (!first?.isTensor) throw new ModelLoadError(file, 'past_key_values.0.key is not a tensor input');
  const [, kvHeads, , headDim] = first.shape;
  if (typeof kvHeads !== 'number' || typeof headDim !== 'number') {
    throw new ModelLoadError(file, `past_key_values.0.key has no static kv_heads/head_dim (shape ${JSON.stringify(first.shape)})`);
  }
  if (first.type !== 'float32' && first.type !== 'float16') {
    throw new ModelLoadError(file, `KV cache dtype ${first.type} is not supported (float32 or float16)`);
  }
  for (let i = 0; i < layers; i++) {
    for (const kind of ['key', 'value']) {
      if (!inputs.has(`past_key_values.${i}.${kind}`) || !outputs.has(`present.${i}.${kind}`)) {
        throw new ModelLoadError(file, `graph lacks past_key_values.${i}.${kind} or present.${i}.${kind}`);
      }
    }
  }
  const logits = outputs.get('logits');
  const vocab = logits?.isTensor ? logits.shape[2] : undefined;
  return {
    layout: { layers, kvHeads, headDim, dtype: first.type as KvDType },
    vocabSize: typeof vocab === 'number' ? vocab : undefined,
    hasPositionIds: inputs.has('position_ids'),
    hasAttentionMask: inputs.has('attention_mask'),
  };
}

function int64(values: ArrayLike<number>): BigInt64Array {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]!);
  return out;
}

/** The new tokens' part of a present tensor: all of it, or its last seqLen slots (Optimum form). */
function newPart(present: ort.Tensor, pastLength: number, seqLen: number): KvData {
  const data = present.data as KvData;
  const [batch, heads, slots, headDim] = present.dims as number[];
  if (slots === seqLen) return data;
  if (slots !== pastLength + seqLen) throw new Error(`present has ${slots} positions; expected ${seqLen} or ${pastLength + seqLen}`);
  const out = data instanceof Float32Array ? new Float32Array(batch! * heads! * seqLen * headDim!) : new Uint16Array(batch! * heads! * seqLen * headDim!);
  const row = seqLen * headDim!;
  for (let bh = 0; bh < batch! * heads!; bh++) {
    const from = (bh * slots + pastLength) * headDim!;
    out.set(data.subarray(from, from + row), bh * row);
  }
  return out;
}

export class OnnxDecoder implements DecoderModel {
  readonly layout: KvLayout;
  readonly vocabSize: number;
  /** The graph returned past + new in present.* and was rewritten at load to return the new tokens only. */
  readonly rewrittenFromConcat: boolean;
  /** onnxruntime keeps prepacked weights (ORT_PREPACK, unless the graph needs them: needsPrepacking()). */
  readonly prepacked: boolean;
  /** Two sessions over the same graph, differing only in threads: see PREFILL_MIN_TOKENS. */
  readonly #prefill: ort.InferenceSession;
  readonly #decode: ort.InferenceSession;
  readonly #graph: GraphInfo;
  /** The graph takes LOGITS_FROM: its two values (a call with lastLogitsOnly computes one position's logits). */
  readonly #logitsFrom: { last: ort.Tensor; all: ort.Tensor } | undefined;
  readonly #pastNames: string[];
  readonly #presentNames: string[];
  #scratch: Float32Array;
  readonly #masks: BigInt64Array[] = [];

  private constructor(
    prefill: ort.InferenceSession,
    decode: ort.InferenceSession,
    graph: GraphInfo,
    vocabSize: number,
    rewritten: boolean,
    prepacked: boolean,
    logitsFrom: boolean,
  ) {
    this.rewrittenFromConcat = rewritten;
    this.#logitsFrom = logitsFrom
      ? { last: new ort.Tensor('int64', BigInt64Array.of(-1n), [1]), all: new ort.Tensor('int64', BigInt64Array.of(0n), [1]) }
      : undefined;
    this.prepacked = prepacked;
    this.#prefill = prefill;
    this.#decode = decode;
    this.#graph = graph;
    this.layout = graph.layout;
    this.vocabSize = vocabSize;
    this.#pastNames = [];
    this.#presentNames = [];
    for (let i = 0; i < graph.layout.layers; i++) {
      this.#pastNames.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
      this.#presentNames.push(`present.${i}.key`, `present.${i}.value`);
    }
    this.#scratch = new Float32Array(vocabSize);
  }

  /**
   * Opens the graph; `configVocab` (config.json) is used only when the logits shape is dynamic.
   * An Optimum-form graph (present.* = past + new) is rewritten to return only the new tokens
   * (onnx/new-tokens-only.ts), so no step copies the whole cache out of onnxruntime.
   */
  static async load(file: string, options: SessionOptions = {}, configVocab?: number): Promise<OnnxDecoder> {
    const threads = options.threads ?? usableCpus();
    const decodeThreads = options.decodeThreads ?? 1;
    let served: ReturnType<typeof servedModel>;
    try {
      served = servedModel(file);
    } catch (err) {
      throw new ModelLoadError(file, `not a loadable ONNX model (${firstLine(err)})`);
    }
    const { model, externalDataDir } = served;
    const prepack = (options.prepack ?? true) || served.needsPrepack;
    const open = (threadCount: number) => {
      const opts = sessionOptions(threadCount, prepack);
      const folder = externalDataDir ? { model_external_initializers_file_folder_path: externalDataDir } : {};
      const extra = opts.extra as { session: Record<string, unknown> };
      return ort.InferenceSession.create(model, { ...opts, extra: { ...extra, session: { ...extra.session, ...folder } } });
    };
    let session: ort.InferenceSession;
    let decode: ort.InferenceSession;
    try {
      session = await open(threads);
      decode = decodeThreads === threads ? session : await open(decodeThreads);
    } catch (err) {
      throw new ModelLoadError(file, `not a loadable ONNX model (${firstLine(err)})`);
    }
    const graph = discover(session, file);
    const vocabSize = graph.vocabSize ?? configVocab;
    if (vocabSize === undefined) {
      throw new ModelLoadError(file, 'vocabulary size unknown: logits shape is dynamic and config.json has no vocab_size');
    }
    return new OnnxDecoder(session, decode, graph, vocabSize, served.rewritten, prepack, served.logitsFrom);
  }

  async forward(input: ForwardInput): Promise<ForwardOutput> {
    const { batch, seqLen, pastLength } = input;
    const { kvHeads, headDim, dtype } = this.layout;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', int64(input.inputIds), [batch, seqLen]),
    };
    const valid = input.pastValid;
    let maskBuffer: BigInt64Array | undefined;
    if (this.#graph.hasAttentionMask) {
      const total = pastLength + seqLen;
      // Mask buffers are reused (a batched step's mask is rows × slots, and a fresh one per
      // step only fed the garbage collector). Each call holds its own until its run ends:
      // onnxruntime reads the mask later, in a setImmediate, and calls may overlap.
      maskBuffer = this.#masks.pop();
      if (!maskBuffer || maskBuffer.length < batch * total) maskBuffer = new BigInt64Array(Math.max(batch * total, 2 * (maskBuffer?.length ?? 0)));
      const mask = maskBuffer.subarray(0, batch * total).fill(1n);
      for (let b = 0; b < batch && valid; b++) mask.fill(0n, b * total + valid[b]!, b * total + pastLength);
      feeds.attention_mask = new ort.Tensor('int64', mask, [batch, total]);
    } else if (valid && Array.prototype.some.call(valid, (v: number) => v !== pastLength)) {
      throw new Error('this graph has no attention_mask input: every past slot must hold a token');
    }
    if (this.#graph.hasPositionIds) {
      feeds.position_ids = new ort.Tensor('int64', int64(input.positionIds), [batch, seqLen]);
    }
    if (this.#logitsFrom) feeds[LOGITS_FROM] = input.lastLogitsOnly ? this.#logitsFrom.last : this.#logitsFrom.all;
    const pastShape = [batch, kvHeads, pastLength, headDim];
    for (let i = 0; i < this.#pastNames.length; i++) {
      feeds[this.#pastNames[i]!] = new ort.Tensor(dtype, input.past[i]!, pastShape);
    }
    const session = batch * seqLen >= PREFILL_MIN_TOKENS && !input.singleThread ? this.#prefill : this.#decode;
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await session.run(feeds);
    } finally {
      if (maskBuffer) this.#masks.push(maskBuffer);
    }
    const logits = out.logits!.data as Float32Array | Uint16Array;
    const newKv = this.#presentNames.map((n) => newPart(out[n]!, pastLength, seqLen));
    const vocab = this.vocabSize;
    const scratch = this.#scratch;
    // Positions computed: seqLen, or the last one only (LOGITS_FROM = -1).
    const kept = out.logits!.dims[1] ?? seqLen;
    const first = seqLen - kept;
    return {
      newKv,
      logits(b: number, s: number): Float32Array {
        if (s < first) throw new RangeError(`logits of position ${s} were not computed (lastLogitsOnly)`);
        const start = (b * kept + s - first) * vocab;
        const row = logits.subarray(start, start + vocab);
        return row instanceof Float32Array ? row : halfArrayToFloat32(row, scratch);
      },
    };
  }

  async close(): Promise<void> {
    await this.#prefill.release();
    if (this.#decode !== this.#prefill) await this.#decode.release();
  }
}
