// What the generation core needs from a decoder model: one forward step over a batch.
// The ONNX implementation lives in runtime/; the core never imports onnxruntime.
import type { KvData, KvLayout } from './kv/layout.js';

/**
 * One model call. `past` holds `pastLength` slots per row; row b's first pastValid[b] slots
 * are its tokens, the slots after them are unused (masked out, whatever they contain):
 *
 *   attention_mask row b:  [1 1 1 1 0 0 | 1]   (past: 4 tokens + 2 unused slots | seqLen new tokens)
 *   position_ids row b:                [4]   (= pastValid[b] + i)
 *
 * The caller owns the cache: the model returns only the new tokens' keys and values.
 */
export interface ForwardInput {
  batch: number;
  seqLen: number;
  pastLength: number;
  /** batch × seqLen token ids, row-major. */
  inputIds: ArrayLike<number>;
  /** batch × seqLen positions, row-major. */
  positionIds: ArrayLike<number>;
  /** Per row, how many leading past slots hold tokens. Omitted: all pastLength. */
  pastValid?: ArrayLike<number>;
  /** 2 × layers tensors [batch, kv_heads, pastLength, head_dim]; layer i: key 2i, value 2i+1. */
  past: readonly KvData[];
  /** Another thread is computing meanwhile (a prefill chunk): run on one thread, not all cores. */
  singleThread?: boolean;
  /**
   * Only the last new position's logits will be read, logits(b, seqLen - 1) (a prompt chunk):
   * the model may leave the others out.
   */
  lastLogitsOnly?: boolean;
}

export interface ForwardOutput {
  /** Logits of row b at new position s, as float32 (a view or a fresh copy; read before the next call). */
  logits(b: number, s: number): Float32Array;
  /** The new tokens' keys and values: 2 × layers tensors [batch, kv_heads, seqLen, head_dim]. */
  newKv: KvData[];
}

export interface DecoderModel {
  readonly layout: KvLayout;
  readonly vocabSize: number;
  forward(input: ForwardInput): Promise<ForwardOutput>;
}

/** A decoder running on a thread of its own, beside the decode steps (src/workers/prefill-thread.ts). */
export interface PrefillModel extends DecoderModel {
  /** False once the thread has gone: prefill then runs inline again. */
  readonly alive: boolean;
}
