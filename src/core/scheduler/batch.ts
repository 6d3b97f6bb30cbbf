// The running sequences' keys and values as one batched cache, fed to every decode step as is.
//
// Per layer a key and a value buffer [rows, kv_heads, slots, head_dim]: row b's tokens fill its
// first lengths[b] slots; the slots after them are unused and masked out by the model call.
// A step appends one token per row in place (the model returns only the new keys and values),
// so the cache is never re-laid out per step: a newcomer's cache is copied into a free row
// once, a leaver's row is read in place by the pool (which copies what it keeps) and the last
// row moved into the gap. Slots grow (and shrink) in steps of SLOT_ROUND, the only full
// re-layout, once every SLOT_ROUND steps at most — it also bounds the masked slots a step
// attends over.
import { KvCache } from '../kv/kv-cache.js';
import { type KvData, type KvLayout, allocKv } from '../kv/layout.js';

/**
 * Slot granularity. A step's attention reads every slot, masked or not: rounding to 32 keeps
 * the unused ones under 32 per row (on average ~16, i.e. < 10% of the work at a 200-token
 * past), and re-lays the cache out at most once per 32 steps. It also makes results exact:
 * with a multiple of 32 slots a row's logits are bit-identical whatever the slot count and
 * batch size (onnxruntime's vectorised softmax sums group elements by their index then), while
 * other counts move them by ~1e-5 (test/runtime/kv-equivalence.test.ts).
 */
export const SLOT_ROUND = 32;

const roundSlots = (tokens: number): number => Math.ceil(tokens / SLOT_ROUND) * SLOT_ROUND;

/** Buffers an idle batch keeps (the rest is freed when the last row leaves). */
const IDLE_KEEP_BYTES = 16 * 2 ** 20;

export class DecodeBatch<T> {
  readonly layout: KvLayout;
  #items: T[] = [];
  #lengths: number[] = [];
  #rowCapacity = 0;
  #slots = 0;
  #buffers: KvData[];
  /**
   * The previous buffer set, kept for the next re-layout to write into when large enough:
   * copying into warm memory costs a fraction of faulting in fresh pages, and re-layouts recur
   * as rows come and go.
   */
  #spare: KvData[] = [];

  constructor(layout: KvLayout) {
    this.layout = layout;
    this.#buffers = Array.from({ length: 2 * layout.layers }, () => allocKv(layout.dtype, 0));
  }

  get size(): number {
    return this.#items.length;
  }

  /** Past positions per row the next step attends over (used and unused). */
  get slots(): number {
    return this.#slots;
  }

  /** The rows' items, in row order (row b is items[b]). */
  get items(): readonly T[] {
    return this.#items;
  }

  /** Tokens held by each row. */
  get lengths(): readonly number[] {
    return this.#lengths;
  }

  /** The step's past: views [size, kv_heads, slots, head_dim] over the buffers. */
  past(): KvData[] {
    const n = this.#items.length * this.#rowElements();
    return this.#buffers.map((b) => b.subarray(0, n));
  }

  /**
   * Adds a row holding `kv` (copied), followed by `tail`: the last step's new keys and values
   * [1, kv_heads, tail.length, head_dim], which then need no copy into `kv` first.
   */
  add(item: T, kv: KvCache, tail?: { kv: readonly KvData[]; length: number }, reserve = 0): void {
    // (Not kv.tensors: that would assemble a block-backed cache, copying it once more.)
    if (kv.layout.layers !== this.layout.layers) throw new Error('layout mismatch');
    const row = this.#items.length;
    const extra = tail?.length ?? 0;
    const length = kv.length + extra;
    // Room for the cache, `reserve` tokens to be written (see write()) and the token the next
    // step appends; rows double (joins are frequent).
    const slots = Math.max(this.#slots, roundSlots(length + reserve + 1));
    const rows = row < this.#rowCapacity ? this.#rowCapacity : Math.max(1, 2 * this.#rowCapacity);
    if (rows !== this.#rowCapacity || slots !== this.#slots) this.#relayout(rows, slots);
    const { kvHeads, headDim } = this.layout;
    for (const r of kv.runs()) {
      this.#buffers[r.tensor]!.set(r.src.subarray(r.from, r.from + r.count * headDim), this.#offset(row, r.head, r.token));
    }
    const m = extra * headDim;
    for (let i = 0; tail && i < this.#buffers.length; i++) {
      for (let h = 0; h < kvHeads; h++) this.#buffers[i]!.set(tail.kv[i]!.subarray(h * m, (h + 1) * m), this.#offset(row, h, kv.length));
    }
    this.#items.push(item);
    this.#lengths.push(length);
    this.#clearTail(row);
  }

  /**
   * Row `item`'s tokens as a transient cache read in place (KvCache.view): valid until the
   * batch next changes, so a caller keeping it copies it first — once, into what it keeps.
   */
  view(item: T): KvCache {
    const row = this.#items.indexOf(item);
    if (row < 0) throw new Error('not in the batch');
    return KvCache.view(this.layout, this.#buffers, this.#offset(row, 0, 0), this.#slots, this.#lengths[row]!);
  }

  /** Removes `item`'s row (take its cache with view() first). */
  remove(item: T): void {
    const row = this.#items.indexOf(item);
    if (row < 0) throw new Error('not in the batch');
    const last = this.#items.length - 1;
    if (row !== last) {
      // The last row moves into the gap (its used slots only).
      const { kvHeads, headDim } = this.layout;
      const n = this.#lengths[last]! * headDim;
      for (const buf of this.#buffers) {
        for (let h = 0; h < kvHeads; h++) {
          const from = this.#offset(last, h, 0);
          buf.copyWithin(this.#offset(row, h, 0), from, from + n);
        }
      }
      this.#items[row] = this.#items[last]!;
      this.#lengths[row] = this.#lengths[last]!;
      this.#clearTail(row);
    }
    this.#items.pop();
    this.#lengths.pop();
    if (this.#items.length === 0) {
      this.#relayout(0, 0);
    } else {
      // Shrink once the longest row left with a margin: later steps attend over fewer slots.
      const needed = roundSlots(Math.max(...this.#lengths) + 1);
      if (needed + SLOT_ROUND < this.#slots) this.#relayout(this.#rowCapacity, needed);
    }
  }

  /** Row `item`'s slots as a one-row past: views [1, kv_heads, slots, head_dim] (valid until the batch changes). */
  rowPast(item: T): KvData[] {
    const row = this.#items.indexOf(item);
    if (row < 0) throw new Error('not in the batch');
    const from = this.#offset(row, 0, 0);
    return this.#buffers.map((b) => b.subarray(from, from + this.#rowElements()));
  }

  /** Appends `count` tokens to one row: newKv [1, kv_heads, count, head_dim] (room reserved by add()). */
  write(item: T, newKv: readonly KvData[], count: number): void {
    const row = this.#items.indexOf(item);
    if (row < 0) throw new Error('not in the batch');
    const at = this.#lengths[row]!;
    if (at + count + 1 > this.#slots) this.#relayout(this.#rowCapacity, roundSlots(at + count + 1));
    const { kvHeads, headDim } = this.layout;
    const n = count * headDim;
    for (let i = 0; i < this.#buffers.length; i++) {
      for (let h = 0; h < kvHeads; h++) this.#buffers[i]!.set(newKv[i]!.subarray(h * n, (h + 1) * n), this.#offset(row, h, at));
    }
    this.#lengths[row] = at + count;
  }

  /**
   * Appends one token per row: newKv are the step's outputs [size, kv_heads, 1, head_dim].
   * Grows the slots when a row would have no room for the next step's token.
   */
  append(newKv: readonly KvData[]): void {
    const { kvHeads, headDim } = this.layout;
    const rows = this.#items.length;
    // Element by element: each piece is one head's vector (head_dim values), for which a
    // subarray() + set() pair cost more than the copy and left two objects per piece for the
    // garbage collector (16 rows: 512 per step).
    for (let i = 0; i < this.#buffers.length; i++) {
      const src = newKv[i]!;
      const dst = this.#buffers[i]!;
      for (let b = 0; b < rows; b++) {
        const at = this.#lengths[b]!;
        for (let h = 0; h < kvHeads; h++) {
          const from = (b * kvHeads + h) * headDim;
          const to = this.#offset(b, h, at);
          for (let d = 0; d < headDim; d++) dst[to + d] = src[from + d]!;
        }
      }
    }
    let longest = 0;
    for (let b = 0; b < rows; b++) longest = Math.max(longest, ++this.#lengths[b]!);
    if (longest + 1 > this.#slots) this.#relayout(this.#rowCapacity, roundSlots(longest + 1));
  }

  #rowElements(slots = this.#slots): number {
    return this.layout.kvHeads * slots * this.layout.headDim;
  }

  #offset(row: number, head: number, slot: number): number {
    return ((row * this.layout.kvHeads + head) * this.#slots + slot) * this.layout.headDim;
  }

  /**
   * Zeroes row b's unused slots. They are masked out, but whatever they held (a departed
   * row's keys) would still be multiplied: a non-finite value there could turn a neighbour's
   * scores into NaN. Rows never see each other's data.
   */
  #clearTail(row: number): void {
    const { kvHeads } = this.layout;
    const from = this.#lengths[row]!;
    if (from >= this.#slots) return;
    for (const buf of this.#buffers) {
      for (let h = 0; h < kvHeads; h++) buf.fill(0, this.#offset(row, h, from), this.#offset(row, h, this.#slots));
    }
  }

  /** Re-lays the rows out as `rows` × `slots` (into the spare buffers when they are large enough). */
  #relayout(rows: number, slots: number): void {
    const { kvHeads, headDim, dtype } = this.layout;
    const old = this.#buffers;
    const oldSlots = this.#slots;
    const need = rows * this.#rowElements(slots);
    const growing = need > 0 && rows === this.#rowCapacity && slots > oldSlots;
    if (growing && need <= old[0]!.length) {
      this.#growInPlace(slots);
      return;
    }
    if (need === 0) {
      // Idle: give the memory back, but for one buffer set of up to IDLE_KEEP_BYTES, so a
      // lone request does not fault in fresh pages for its row every time.
      const keep = old.reduce((sum, b) => sum + b.byteLength, 0) <= IDLE_KEEP_BYTES;
      this.#buffers = old.map(() => allocKv(dtype, 0));
      this.#spare = keep ? old : [];
    } else {
      const spare = this.#spare;
      // Headroom: 25% when rows come or go, so that the two sets settle at a size both fit; twice
      // the need when rows outgrow their slots, so that the next growths happen in place (pages
      // never written are not resident). With 25% a 256-token answer re-laid into fresh pages
      // three times instead of once, each a 10–20 ms step at SmolLM2-135M size.
      const headroom = growing ? 2 : 1.25;
      this.#buffers = spare.length === old.length && spare[0]!.length >= need ? spare : old.map(() => allocKv(dtype, Math.ceil(need * headroom)));
      this.#spare = old;
    }
    this.#rowCapacity = rows;
    this.#slots = slots;
    for (let i = 0; i < old.length; i++) {
      for (let b = 0; b < this.#items.length; b++) {
        const n = this.#lengths[b]! * headDim;
        for (let h = 0; h < kvHeads; h++) {
          const from = (b * kvHeads + h) * oldSlots * headDim;
          this.#buffers[i]!.set(old[i]!.subarray(from, from + n), this.#offset(b, h, 0));
        }
      }
    }
    for (let b = 0; b < this.#items.length; b++) this.#clearTail(b);
  }

  /**
   * More slots per row within the buffers' headroom: each (row, head) run moves up to its new
   * offset, the last first, so no run is overwritten before it has moved. Growing into another
   * buffer set instead faults in fresh pages: 3–14 ms on such a step at SmolLM2-135M size (one
   * row of ~200 tokens), against ~1 ms for the move.
   */
  #growInPlace(slots: number): void {
    const { kvHeads, headDim } = this.layout;
    const oldSlots = this.#slots;
    this.#slots = slots;
    for (const buf of this.#buffers) {
      for (let run = this.#items.length * kvHeads - 1; run > 0; run--) {
        const from = run * oldSlots * headDim;
        buf.copyWithin(run * slots * headDim, from, from + this.#lengths[Math.floor(run / kvHeads)]! * headDim);
      }
    }
    for (let b = 0; b < this.#items.length; b++) this.#clearTail(b);
  }
}
