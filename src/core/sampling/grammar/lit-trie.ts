// A small byte trie over a fixed set of literal strings — an object's candidate keys or an enum's
// JSON-encoded values — that also knows, per node, the fewest bytes that still finish a document
// from there, so "must finish" decoding can rank continuations.

export class LitTrie {
  readonly next: Map<number, number>[] = [new Map()];
  /** The literal ending at a node (its caller's index), or -1. */
  readonly value: number[] = [-1];
  /** Fewest bytes from a node to the end of a literal plus that literal's weight (see weigh()). */
  cost: number[] = [];

  constructor(entries: readonly { bytes: Uint8Array; value: number }[]) {
    for (const { bytes, value } of entries) {
      let t = 0;
      for (const c of bytes) {
        let nx = this.next[t]!.get(c);
        if (nx === undefined) {
          nx = this.next.length;
          this.next.push(new Map());
          this.value.push(-1);
          this.next[t]!.set(c, nx);
        }
        t = nx;
      }
      if (this.value[t] === -1) this.value[t] = value; // a duplicate literal keeps its first index
    }
    this.weigh(() => 0);
  }

  get empty(): boolean {
    return this.next[0]!.size === 0;
  }

  isLeaf(t: number): boolean {
    return this.next[t]!.size === 0;
  }

  /** Sets cost[] given what finishing the document costs after each literal. */
  weigh(after: (value: number) => number): void {
    const cost = new Array<number>(this.next.length).fill(Infinity);
    // Children always have larger indices than their parent, so one backward pass suffices.
    for (let t = this.next.length - 1; t >= 0; t--) {
      let best = this.value[t]! >= 0 ? after(this.value[t]!) : Infinity;
      for (const child of this.next[t]!.values()) best = Math.min(best, 1 + cost[child]!);
      cost[t] = best;
    }
    this.cost = cost;
  }
}
