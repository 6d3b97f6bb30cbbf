// One sequence's KV cache: per layer a key and a value tensor [1, kv_heads, length, head_dim].
// Buffers are plain JS memory (onnxruntime-node copies every output), so the cache's size is
// exactly the sum of their byteLength and dropping the references frees it.
import { type KvData, type KvLayout, allocKv } from './layout.js';

export class KvCache {
  readonly layout: KvLayout;
  #tensors: KvData[];
  #length: number;

  private constructor(layout: KvLayout, tensors: KvData[], length: number) {
    this.layout = layout;
    this.#tensors = tensors;
    this.#length = length;
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

  /** Layer i's key is tensors[2i], its value tensors[2i+1]. */
  get tensors(): readonly KvData[] {
    return this.#tensors;
  }

  get byteLength(): number {
    let sum = 0;
    for (const t of this.#tensors) sum += t.byteLength;
    return sum;
  }

  /**
   * Appends `count` tokens' keys and values (the model's new-token outputs, 2 × layers tensors
   * [1, kv_heads, count, head_dim]). Copies into new buffers: the old ones may be shared.
   */
  append(newKv: readonly KvData[], count: number): void {
    if (newKv.length !== this.#tensors.length) throw new Error(`expected ${this.#tensors.length} tensors, got ${newKv.length}`);
    const { kvHeads, headDim, dtype } = this.layout;
    const old = this.#length;
    const length = old + count;
    this.#tensors = this.#tensors.map((src, i) => {
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
    const out = this.#tensors.map((src) => {
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
