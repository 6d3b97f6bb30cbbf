// One sequence's KV cache: per layer a key and a value tensor [1, kv_heads, length, head_dim].
// Buffers are plain JS memory (onnxruntime-node copies every output), so the cache's size is
// exactly the sum of their byteLength and dropping the references frees it.
//
// A cache can also stand for a run of prefix blocks without copying them: its runs are then
// the blocks', and its contiguous tensors are assembled only if something asks for them (a
// prefill from that past does; copying the cache into a batch row does not). And it can be a
// transient view of a decode-batch row, so that a finished sequence's cache is copied once,
// straight into what the pool keeps (prefix blocks, or a session's own tensors).
import { type KvData, type KvLayout, allocKv, kvBytesPerToken } from './layout.js';

/** `count` tokens of one tensor's head: elements [from, from + count × head_dim) of `src`, for tokens [token, token + count). */
export interface KvRun {
  tensor: number;
  head: number;
  src: KvData;
  from: number;
  token: number;
  count: number;
}

export class KvCache {
  readonly layout: KvLayout;
  #tensors: KvData[] | undefined;
  /** Per block, 2 × layers tensors [kv_heads, blockSize, head_dim]; set while not assembled. */
  #blocks: { tensors: readonly (readonly KvData[])[]; size: number } | undefined;
  /** Set for a view of a batch row: head h of tensor i starts at offset + h × slots × head_dim of buffers[i]. */
  #view: { buffers: readonly KvData[]; offset: number; slots: number } | undefined;
  #length: number;

  private constructor(layout: KvLayout, tensors: KvData[] | undefined, length: number) {
    this.layout = layout;
    this.#tensors = tensors;
    this.#length = length;
  }

  /** Prefix blocks laid end to end, read in place (they are never written). */
  static ofBlocks(layout: KvLayout, blocks: readonly (readonly KvData[])[], blockSize: number): KvCache {
    const cache = new KvCache(layout, undefined, blocks.length * blockSize);
    cache.#blocks = { tensors: blocks, size: blockSize };
    return cache;
  }

  /**
   * Tokens [0, length) of one row of batched buffers [rows, kv_heads, slots, head_dim], read in
   * place. Transient: valid only until that memory is next written, so whoever keeps the
   * cache must own() it first.
   */
  static view(layout: KvLayout, buffers: readonly KvData[], offset: number, slots: number, length: number): KvCache {
    if (buffers.length !== 2 * layout.layers) throw new Error(`expected ${2 * layout.layers} tensors, got ${buffers.length}`);
    const cache = new KvCache(layout, undefined, length);
    cache.#view = { buffers, offset, slots };
    return cache;
  }

  static empty(layout: KvLayout): KvCache {
    const tensors = Array.from({ length: 2 * layout.layers }, () => allocKv(layout.dtype, 0));
    return new KvCache(layout, tensors, 0);
  }

  /** Wraps existing tensors [1, kv_heads, length, head_dim] (not copied: they are never written). */
  static of(layout: KvLayout, tensors: KvData[], length: number): KvCache {
    if (tensors.length !== 2 * layout.layers) throw new Error(`expected ${2 * layout.layers} tensors, got ${tensors.length}`);
    return new KvCache(layout, tensors, length);
  }

  /** Tokens whose keys and values are held. */
  get length(): number {
    return this.#length;
  }

  /** Layer i's key is tensors[2i], its value tensors[2i+1]: contiguous [1, kv_heads, length, head_dim]. */
  get tensors(): readonly KvData[] {
    return this.#assembled();
  }

  /** Whether the cache reads memory it does not own (a view of a batch row). */
  get transient(): boolean {
    return this.#view !== undefined;
  }

  /** The same cache holding its own memory: a view is copied (once, in place); others are returned as they are. */
  own(): this {
    if (this.#view) this.#assembled();
    return this;
  }

  /**
   * Tokens [start, start + count) of one head of one tensor, as a view [count, head_dim] of
   * where they are held (a block-backed cache is assembled first).
   */
  headSlice(tensor: number, head: number, start: number, count: number): KvData {
    if (start < 0 || count < 0 || start + count > this.#length) throw new RangeError(`tokens ${start}..${start + count} outside 0..${this.#length}`);
    const { headDim } = this.layout;
    if (this.#view) {
      const { buffers, offset, slots } = this.#view;
      const from = offset + (head * slots + start) * headDim;
      return buffers[tensor]!.subarray(from, from + count * headDim);
    }
    const from = (head * this.#length + start) * headDim;
    return this.#assembled()[tensor]!.subarray(from, from + count * headDim);
  }

  /** The cache's contiguous pieces, for copying it elsewhere without assembling it. */
  *runs(): Generator<KvRun> {
    const { kvHeads, headDim, layers } = this.layout;
    if (this.#view) {
      const { buffers, offset, slots } = this.#view;
      for (let tensor = 0; tensor < 2 * layers; tensor++) {
        for (let head = 0; head < kvHeads; head++)
          yield { tensor, head, src: buffers[tensor]!, from: offset + head * slots * headDim, token: 0, count: this.#length };
      }
      return;
    }
    if (this.#blocks) {
      const { tensors, size } = this.#blocks;
      for (let tensor = 0; tensor < 2 * layers; tensor++) {
        for (const [b, block] of tensors.entries()) {
          for (let head = 0; head < kvHeads; head++) yield { tensor, head, src: block[tensor]!, from: head * size * headDim, token: b * size, count: size };
        }
      }
      return;
    }
    for (const [tensor, src] of this.#tensors!.entries()) {
      for (let head = 0; head < kvHeads; head++) yield { tensor, head, src, from: head * this.#length * headDim, token: 0, count: this.#length };
    }
  }

  #assembled(): KvData[] {
    if (!this.#tensors) {
      const { kvHeads, headDim, dtype, layers } = this.layout;
      const length = this.#length;
      const out = Array.from({ length: 2 * layers }, () => allocKv(dtype, kvHeads * length * headDim));
      for (const r of this.runs()) out[r.tensor]!.set(r.src.subarray(r.from, r.from + r.count * headDim), (r.head * length + r.token) * headDim);
      this.#tensors = out;
      this.#blocks = undefined;
      this.#view = undefined;
    }
    return this.#tensors;
  }

  /** Bytes of its keys and values (as assembled: a block-backed cache or a view counts the bytes it stands for). */
  get byteLength(): number {
    if (!this.#tensors) return this.#length * kvBytesPerToken(this.layout);
    let sum = 0;
    for (const t of this.#tensors) sum += t.byteLength;
    return sum;
  }

  /**
   * Appends `count` tokens' keys and values (the model's new-token outputs, 2 × layers tensors
   * [1, kv_heads, count, head_dim]). Copies into new buffers: the old ones may be shared.
   */
  append(newKv: readonly KvData[], count: number): void {
    const current = this.#assembled();
    if (newKv.length !== current.length) throw new Error(`expected ${current.length} tensors, got ${newKv.length}`);
    const { kvHeads, headDim, dtype } = this.layout;
    const old = this.#length;
    const length = old + count;
    this.#tensors = current.map((src, i) => {
      const add = newKv[i]!;
      if (add.length !== kvHeads * count * headDim) throw new Error(`new keys/values for ${add.length / (kvHeads * headDim)} tokens, expected ${count}`);
      const dst = allocKv(dtype, kvHeads * length * headDim);
      for (let h = 0; h < kvHeads; h++) {
        dst.set(src.subarray(h * old * headDim, (h + 1) * old * headDim), h * length * headDim);
        dst.set(add.subarray(h * count * headDim, (h + 1) * count * headDim), (h * length + old) * headDim);
      }
      return dst;
    });
    this.#length = length;
  }

  /** A new cache holding the first `length` tokens (copied, so the two are independent). */
  slice(length: number): KvCache {
    if (!Number.isInteger(length) || length < 0 || length > this.#length) {
      throw new RangeError(`slice length ${length} outside 0..${this.#length}`);
    }
    const { kvHeads, headDim, dtype } = this.layout;
    const out = this.#assembled().map((src) => {
      const dst = allocKv(dtype, kvHeads * length * headDim);
      for (let h = 0; h < kvHeads; h++) {
        const from = h * this.#length * headDim;
        dst.set(src.subarray(from, from + length * headDim), h * length * headDim);
      }
      return dst;
    });
    return new KvCache(this.layout, out, length);
  }
}
