// The step loop: continuous batching over the admitted sequences.
//
// Each iteration (a "step") first prefills newcomers' prompts, in chunks of at most
// maxPrefillTokensPerStep tokens in total, then advances every decoding sequence by one token
// in ONE batched model call. A sequence whose prompt is done joins the batch before the next
// step; a finished or aborted one leaves at once and frees its slot. With a prefill model (the
// same model on a thread of its own), chunks run there while the batch decodes (#offload).
//
// Prefill runs as its own model calls, chunked, rather than mixed into the decode call: a
// whole prompt in one call would freeze every running stream for its full prefill, and a mixed
// call would need per-row sequence lengths, which the graph does not take. Chunks are cut at
// fixed offsets of each prompt, so a request computes the same numbers whoever runs beside it,
// inline or on the prefill thread (tested). Chunk size and thread choices: docs/benchmarks.md.
import type { KvCacheManager } from '../kv/cache-manager.js';
import { KvCache } from '../kv/kv-cache.js';
import type { KvData } from '../kv/layout.js';
import type { DecoderModel, ForwardOutput, PrefillModel } from '../model.js';
import { BATCH_SIZE_BUCKETS, BucketHistogram, type BucketSnapshot, LATENCY_BUCKETS } from '../../metrics/buckets.js';
import { DecodeBatch } from './batch.js';
import type { DoneEvent, EngineErrorCode, EngineEvent, FinishReason } from './events.js';
import type { Sequence } from './sequence.js';

/** Resolves after one turn of the event loop: what arrived meanwhile (messages, I/O) is handled. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export interface StepLoopOptions {
  model: DecoderModel;
  /** The same model on a thread of its own: prompt chunks run there while the batch decodes. */
  prefillModel?: PrefillModel | undefined;
  cache: KvCacheManager;
  eosIds: readonly number[];
  contextLength: number;
  maxPrefillTokensPerStep: number;
  /** For the message of a sequence that ran out of time. */
  requestTimeoutMs: number;
  /** Text deltas. */
  emit: (event: EngineEvent) => void;
  /** A sequence ended (its cache is back in the pool): its `done` event, for the scheduler to send. */
  finished: (seq: Sequence, done: Omit<DoneEvent, 'type' | 'id'>) => void;
}

export class StepLoop {
  readonly #o: StepLoopOptions;
  readonly #eos: ReadonlySet<number>;
  readonly #running = new Map<string, Sequence>();
  /** Sequences prefilling (inline or offloaded), in arrival order. */
  readonly #prefilling: Sequence[] = [];
  /** Prefilled sequences (first token out) joining the batch before the next step. */
  readonly #ready: Sequence[] = [];
  readonly #batch: DecodeBatch<Sequence>;
  /** An empty past [1, kv_heads, 0, head_dim] per tensor. */
  readonly #noPast: readonly KvData[];
  #loop: Promise<void> | undefined;
  /** The chunk running on the prefill thread (one at a time), settled once it is taken in. */
  #offloading: Promise<void> | undefined;
  readonly #batchSizes = new BucketHistogram(BATCH_SIZE_BUCKETS);
  readonly #stepSeconds = new BucketHistogram(LATENCY_BUCKETS);

  constructor(options: StepLoopOptions) {
    this.#o = options;
    this.#eos = new Set(options.eosIds);
    this.#batch = new DecodeBatch(options.model.layout);
    this.#noPast = KvCache.empty(options.model.layout).tensors;
  }

  get size(): number {
    return this.#running.size;
  }

  get(id: string): Sequence | undefined {
    return this.#running.get(id);
  }

  ids(): IterableIterator<string> {
    return this.#running.keys();
  }

  /** Takes in a newly admitted sequence (phase prefilling) and runs the loop if it is idle. */
  add(seq: Sequence): void {
    this.#running.set(seq.id, seq);
    if (seq.phase === 'prefilling') this.#prefilling.push(seq);
    this.#loop ??= this.#run();
  }

  /** Resolves when no sequence is running. */
  async idle(): Promise<void> {
    while (this.#loop) await this.#loop;
  }

  /** Batch size and duration of every step so far, for /metrics. */
  stepStats(): { batchSize: BucketSnapshot; durationSeconds: BucketSnapshot } {
    return { batchSize: this.#batchSizes.snapshot(), durationSeconds: this.#stepSeconds.snapshot() };
  }

  async #run(): Promise<void> {
    try {
      // An offloaded chunk keeps the loop alive: its result is taken in here, never after.
      while (this.#running.size > 0 || this.#offloading) {
        // One turn of the event loop before the step is laid out takes in what came during the
        // last model call: a chunk's result (its sequence then decodes in this step, not the
        // next), a newcomer (its prefill starts a step sooner), an abort. It costs a few µs.
        await nextTurn();
        const start = performance.now();
        for (const seq of [...this.#running.values()]) {
          if (seq.aborted) this.#finish(seq, 'abort', '');
          else if (seq.timedOut) this.#fail(seq, 'request_timeout', `the request ran past ${this.#o.requestTimeoutMs} ms`);
        }
        await this.#prefillStep();
        if (this.#ready.length > 0) {
          // Newcomers' first tokens leave before they join the batch (a join copies the whole
          // prompt cache): one turn of the event loop lets the sink deliver them.
          await nextTurn();
          for (const seq of this.#ready.splice(0)) this.#join(seq);
        }
        if (this.#batch.size > 0) {
          await this.#decodeStep();
        } else if (this.#offloading) {
          // Nothing to decode: wait for the prefill thread (a wait, not a step).
          await this.#offloading;
          continue;
        }
        this.#stepSeconds.observe((performance.now() - start) / 1000);
      }
    } finally {
      // Cleared in the same tick as the emptiness check above, so an add() can never see a
      // loop that is about to end and fail to start a new one.
      this.#loop = undefined;
    }
  }

  /**
   * Prefill chunks, first come first served, up to the step's token budget. While the batch
   * decodes and a prefill thread exists, chunks go there instead, one at a time, except a
   * cached prefix's one-chunk suffix (it reads the batch row, and is short).
   */
  async #prefillStep(): Promise<void> {
    const max = this.#o.maxPrefillTokensPerStep;
    let budget = max;
    const thread = this.#o.prefillModel;
    for (const seq of [...this.#prefilling]) {
      if (seq.phase !== 'prefilling') continue;
      const chunk = Math.min(seq.promptLeft, max);
      // A prompt whose uncached part is one chunk is prefilled in its batch row.
      const inBatch = chunk === seq.promptLeft && seq.length === seq.cachedTokens;
      if (thread?.alive && this.#batch.size > 0 && !(inBatch && seq.cachedTokens > 0)) {
        if (!this.#offloading) this.#offload(thread, seq, chunk);
        continue;
      }
      if (chunk > budget) return;
      budget -= chunk;
      try {
        if (inBatch) await this.#prefillInBatch(seq, chunk);
        else await this.#prefillChunk(seq, chunk);
      } catch (err) {
        this.#fail(seq, 'internal', (err as Error).message);
      }
    }
  }

  /**
   * Runs one prompt chunk on the prefill thread while the decode steps go on (on one thread,
   * leaving the prefill thread a core); the result is taken in between two steps, as an inline
   * chunk's would be.
   */
  #offload(thread: PrefillModel, seq: Sequence, n: number): void {
    const input = seq.chunkInput(n);
    seq.to('offloaded');
    // The sequence may have ended (aborted, timed out) while its chunk ran: then nothing is kept.
    const current = (): boolean => this.#running.get(seq.id) === seq;
    // One handler for the call failing and for taking its result in failing.
    this.#offloading = thread
      .forward(input)
      .then((out) => {
        if (!current()) return;
        seq.to('prefilling');
        this.#chunkDone(seq, n, input.pastLength, out);
      })
      .catch((err: Error) => {
        if (current()) this.#fail(seq, 'internal', err.message);
      })
      .finally(() => {
        this.#offloading = undefined;
      });
  }

  /**
   * The whole uncached prompt in one call, computed in the sequence's own batch row: its
   * cached prefix is copied there first, the call reads the row as its past (unused slots
   * masked; no past at all when nothing is cached) and the new keys and values are written
   * after it. Nothing is copied again when it starts decoding, so its first token is out at
   * once. (Whether a prompt takes this path depends on it alone, not on its neighbours.)
   */
  async #prefillInBatch(seq: Sequence, n: number): Promise<void> {
    const cached = seq.length;
    this.#prefilling.splice(this.#prefilling.indexOf(seq), 1);
    this.#batch.add(seq, seq.kv!, undefined, n);
    seq.kv = undefined;
    seq.to('decoding');
    const out = await this.#o.model.forward({
      batch: 1,
      seqLen: n,
      // With nothing cached the call reads no past at all: attending over the row's empty
      // slots would cost a chunk more.
      pastLength: cached === 0 ? 0 : this.#batch.slots,
      inputIds: seq.promptIds.slice(cached, cached + n),
      positionIds: Array.from({ length: n }, (_, i) => cached + i),
      ...(cached === 0 ? { past: this.#noPast } : { pastValid: [cached], past: this.#batch.rowPast(seq) }),
      lastLogitsOnly: seq.promptScores === undefined,
    });
    this.#batch.write(seq, out.newKv, n);
    seq.length = cached + n;
    this.#o.cache.grow(seq.lease, seq.length);
    seq.scorePrompt(out, cached, n);
    const logits = out.logits(0, n - 1);
    if (seq.forks.length > 0) this.#fork(seq, logits, this.#batch.view(seq).own());
    this.#accept(seq, logits);
  }

  async #prefillChunk(seq: Sequence, n: number): Promise<void> {
    const input = seq.chunkInput(n);
    this.#chunkDone(seq, n, input.pastLength, await this.#o.model.forward(input));
  }

  /** Takes in a chunk computed over the sequence's own cache (`past` tokens long). */
  #chunkDone(seq: Sequence, n: number, past: number, out: ForwardOutput): void {
    seq.length = past + n;
    this.#o.cache.grow(seq.lease, seq.length);
    seq.scorePrompt(out, past, n);
    if (seq.promptLeft > 0) {
      seq.kv!.append(out.newKv, n);
      return;
    }
    this.#prefilling.splice(this.#prefilling.indexOf(seq), 1);
    // The prompt's last chunk goes straight into the batch row (one copy, not two); a
    // sequence that ends here keeps its cache as one piece for the pool.
    seq.tail = { kv: out.newKv, length: n };
    seq.to('ready');
    const logits = out.logits(0, n - 1);
    if (seq.forks.length > 0) this.#fork(seq, logits, seq.kv!, seq.tail);
    if (this.#accept(seq, logits)) this.#ready.push(seq);
  }

  /** Choices 1..n-1 start from choice 0's prompt (Sequence.forkFrom) and sample their first tokens. */
  #fork(seq: Sequence, logits: Float32Array, kv: KvCache, tail?: { kv: KvData[]; length: number }): void {
    for (const f of seq.forks.splice(0)) {
      if (this.#running.get(f.id) !== f) continue;
      f.forkFrom(seq, kv, tail);
      this.#o.cache.grow(f.lease, f.length);
      if (this.#accept(f, logits)) this.#ready.push(f);
    }
  }

  /** A prefilled sequence enters the decode batch. */
  #join(seq: Sequence): void {
    this.#batch.add(seq, seq.kv!, seq.tail);
    seq.tail = undefined;
    seq.kv = undefined;
    seq.to('decoding');
  }

  /** One token for every sequence in the batch, in one model call. */
  async #decodeStep(): Promise<void> {
    const batch = this.#batch;
    const rows = [...batch.items];
    const lengths = [...batch.lengths];
    let out: ForwardOutput;
    try {
      out = await this.#o.model.forward({
        batch: rows.length,
        seqLen: 1,
        pastLength: batch.slots,
        inputIds: rows.map((seq) => seq.lastToken),
        positionIds: lengths,
        pastValid: lengths,
        past: batch.past(),
        singleThread: this.#offloading !== undefined,
      });
    } catch (err) {
      for (const seq of rows) this.#fail(seq, 'internal', (err as Error).message);
      return;
    }
    // Rows cannot change during the call: only this loop adds or removes them.
    batch.append(out.newKv);
    this.#batchSizes.observe(rows.length);
    for (const [b, seq] of rows.entries()) {
      seq.length = lengths[b]! + 1;
      this.#o.cache.grow(seq.lease, seq.length);
      this.#accept(seq, out.logits(b, 0));
    }
  }

  /**
   * Samples the sequence's next token from `logits` and takes it: emits its text, or finishes
   * the sequence. Returns whether it goes on. A row the sampler cannot draw from (a model that
   * emitted only NaN or -Infinity) fails this request alone, not the step or the loop.
   */
  #accept(seq: Sequence, logits: Float32Array): boolean {
    let step: { text: string; end?: FinishReason };
    try {
      step = seq.advance(logits, this.#eos, this.#o.contextLength);
    } catch (err) {
      this.#fail(seq, 'internal', `sampling failed: ${(err as Error).message}`);
      return false;
    }
    if (step.end) return this.#finish(seq, step.end, step.text);
    if (step.text) this.#o.emit({ type: 'delta', id: seq.requestId, text: step.text, ...seq.drain() });
    return true;
  }

  #fail(seq: Sequence, errorCode: EngineErrorCode, error: string): void {
    this.#finish(seq, 'error', '', { error, errorCode });
  }

  /** Ends a running sequence: its cache goes back to the pool, its slot to the queue. Returns false. */
  #finish(seq: Sequence, finishReason: FinishReason, text: string, failure?: { error: string; errorCode: EngineErrorCode }): false {
    if (!this.#running.delete(seq.id)) return false;
    // Choices still waiting for this one's prompt end with it.
    for (const f of seq.forks.splice(0)) this.#finish(f, finishReason, '', failure);
    const decoding = seq.phase === 'decoding';
    let kv: KvCache | undefined;
    if (decoding) {
      // Read in place: the pool copies what it keeps, then the row goes.
      kv = this.#batch.view(seq);
    } else {
      kv = seq.kv;
      if (kv && seq.tail) kv.append(seq.tail.kv, seq.tail.length);
      for (const list of [this.#prefilling, this.#ready]) {
        const i = list.indexOf(seq);
        if (i >= 0) list.splice(i, 1);
      }
    }
    seq.to('finished');
    // A failed step may have left the cache half-updated: keep nothing from it.
    const keep = failure?.errorCode === 'internal' ? undefined : kv;
    this.#o.cache.release(seq.lease, keep ? { kv: keep, tokens: seq.cachedSequence() } : undefined);
    if (decoding) this.#batch.remove(seq);
    this.#o.finished(seq, { finishReason, text, usage: seq.usage(), queueMs: seq.queueMs, ...failure, ...seq.drain() });
    return false;
  }
}
