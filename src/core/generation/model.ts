// What the generation core needs from a decoder model: one forward step over a batch.
// The ONNX implementation lives in runtime/; the core never imports onnxruntime.
import type { KvData, KvLayout } from '../kv/layout.js';

/**
 * One model call. Rows are left-padded to a common past length:
 *
 *   attention_mask row b:  [0 0 1 1 1 1 | 1]   (past: 2 pads + 4 real | seqLen new tokens)
 *   position_ids row b:                [4]   (= real tokens before it)
 */
export interface ForwardInput {
  batch: number;
  seqLen: number;
  pastLength: number;
  /** batch × seqLen token ids, row-major. */
  inputIds: ArrayLike<number>;
  /** batch × seqLen positions, row-major. */
  positionIds: ArrayLike<number>;
  /**
   * Left-padding slots per row: the first padding[b] of row b's pastLength + seqLen positions
   * are masked out. Omitted: no padding. (The runtime builds the mask itself, so a step never
   * spends work proportional to the whole context on it.)
   */
  padding?: ArrayLike<number>;
  /** 2 × layers tensors [batch, kv_heads, pastLength, head_dim]; layer i: key 2i, value 2i+1. */
  past: readonly KvData[];
}

export interface ForwardOutput {
  /** Logits of row b at new position s, as float32 (a view or a fresh copy; read before the next call). */
  logits(b: number, s: number): Float32Array;
  /** 2 × layers tensors [batch, kv_heads, pastLength + seqLen, head_dim]. */
  present: KvData[];
}

export interface DecoderModel {
  readonly layout: KvLayout;
  readonly vocabSize: number;
  forward(input: ForwardInput): Promise<ForwardOutput>;
}
