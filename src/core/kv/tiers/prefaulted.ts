// Buffers touched ahead of time for the disk tier's reads. Memory a process touches for the
// first time costs a page fault per 4 KiB page; on a virtual machine like the CI one that is
// ~10 µs a page, so reading a page-cached 1,024-token prompt's block files into fresh buffers
// took 15 ms of faults for 1 ms of copying (docs/benchmarks.md). The reserve is refilled in
// idle turns of the tier thread, so a fetch reads at memory speed. It is RAM held outside the
// KV budget, bounded by KV_CACHE_DISK_READ_RESERVE_BYTES (0: off).

/** Bytes touched per turn of the event loop while refilling, so a fetch is never held up long. */
const REFILL_BYTES_PER_TURN = 1 << 20;
const PAGE = 4096;

export class PrefaultedBuffers {
  readonly maxBytes: number;
  /** The size buffers are kept in: the last size asked for (block files of a model are alike). */
  #size = 0;
  readonly #free: ArrayBuffer[] = [];
  #refilling = false;
  readonly stats = { taken: 0, missed: 0 };

  constructor(maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`maxBytes must be a non-negative integer, got ${maxBytes}`);
    this.maxBytes = maxBytes;
  }

  /** Bytes held in the reserve now. */
  get bytes(): number {
    return this.#free.length * this.#size;
  }

  /** A buffer of exactly `size` bytes, pre-touched when the reserve has one (contents unspecified). */
  take(size: number): Uint8Array {
    if (size !== this.#size) this.prime(size);
    const buffer = this.#free.pop();
    if (buffer) this.stats.taken++;
    else this.stats.missed++;
    this.#refill();
    return buffer ? new Uint8Array(buffer) : new Uint8Array(size);
  }

  /** Keeps buffers of `size` from now on (others are let go) and starts filling the reserve. */
  prime(size: number): void {
    if (size !== this.#size) {
      this.#free.length = 0;
      this.#size = size > 0 && size <= this.maxBytes ? size : 0;
    }
    this.#refill();
  }

  #refill(): void {
    if (this.#refilling || this.#size === 0 || this.bytes + this.#size > this.maxBytes) return;
    this.#refilling = true;
    setImmediate(() => {
      this.#refilling = false;
      const size = this.#size;
      for (let done = 0; size > 0 && done < REFILL_BYTES_PER_TURN && this.bytes + size <= this.maxBytes; done += size) {
        const buffer = new ArrayBuffer(size);
        const bytes = new Uint8Array(buffer);
        for (let i = 0; i < size; i += PAGE) bytes[i] = 0;
        this.#free.push(buffer);
      }
      this.#refill();
    });
  }
}
