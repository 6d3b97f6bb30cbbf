// Hands node-llama-cpp's context sequences to requests (bench/lib/llama-cpp-server.ts). One
// context holds N sequences that llama.cpp evaluates together in shared batches; each sequence
// keeps the tokens it evaluated (its KV cells) after a request ends, so a later request whose
// prompt starts the same way can skip that prefix. Which free sequence a request gets:
//
//   1. its session's sequence (session_id), if free;
//   2. else the free, session-less sequence sharing the longest prefix with its prompt
//      (ties: least recently used, so a fresh prompt evicts the stalest tokens);
//   3. else the least recently used free sequence of another session (that session loses it);
//   4. else it waits, first come first served.
//
// A session pins its sequence between requests only while free sequences remain for others.
import type { LlamaContext, LlamaContextSequence, Token } from 'node-llama-cpp';

export interface Slot {
  readonly sequence: LlamaContextSequence;
  readonly index: number;
  busy: boolean;
  lastUsed: number;
  session: string | undefined;
}

export class SlotPool {
  readonly slots: Slot[];
  readonly #waiting: { tokens: Token[]; session: string | undefined; resolve: (s: Slot) => void }[] = [];
  #clock = 0;

  constructor(context: LlamaContext) {
    this.slots = Array.from({ length: context.totalSequences }, (_, index) => ({
      sequence: context.getSequence(),
      index,
      busy: false,
      lastUsed: 0,
      session: undefined,
    }));
  }

  /** A free sequence for `tokens` (see the module comment); waits while all are busy. */
  acquire(tokens: Token[], session: string | undefined): Promise<Slot> {
    const slot = this.#pick(tokens, session);
    if (slot) return Promise.resolve(this.#take(slot, session));
    return new Promise((resolve) => this.#waiting.push({ tokens, session, resolve }));
  }

  release(slot: Slot): void {
    slot.busy = false;
    slot.lastUsed = ++this.#clock;
    const next = this.#waiting.shift();
    if (next) next.resolve(this.#take(this.#pick(next.tokens, next.session)!, next.session));
  }

  /** Forgets a session: its sequence stays as it is, free for anyone (its tokens may still serve a prefix). */
  endSession(session: string): boolean {
    const slot = this.slots.find((s) => s.session === session);
    if (slot) slot.session = undefined;
    return slot !== undefined;
  }

  #take(slot: Slot, session: string | undefined): Slot {
    slot.busy = true;
    if (session !== undefined) {
      for (const s of this.slots) if (s.session === session && s !== slot) s.session = undefined;
      slot.session = session;
    } else if (slot.session !== undefined) {
      slot.session = undefined;
    }
    return slot;
  }

  #pick(tokens: Token[], session: string | undefined): Slot | undefined {
    const free = this.slots.filter((s) => !s.busy);
    if (free.length === 0) return undefined;
    if (session !== undefined) {
      const own = free.find((s) => s.session === session);
      if (own) return own;
    }
    const unpinned = free.filter((s) => s.session === undefined);
    if (unpinned.length > 0) {
      let best = unpinned[0]!;
      let bestShared = -1;
      for (const s of unpinned) {
        const shared = s.sequence.compareContextTokens(tokens).firstDifferentIndex;
        if (shared > bestShared || (shared === bestShared && s.lastUsed < best.lastUsed)) {
          best = s;
          bestShared = shared;
        }
      }
      return best;
    }
    return free.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
  }
}
