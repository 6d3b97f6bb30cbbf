// Finds stop sequences in streamed text. A stop can arrive split across several tokens, so any
// tail that could still grow into a stop is held back until it is resolved: the client must
// never see any part of a stop sequence, yet must get everything else as early as possible.

interface StopPattern {
  readonly text: string;
  /** KMP failure function: failure[i] = length of the longest proper border of text[0..i]. */
  readonly failure: readonly number[];
  /** Length of the longest suffix of the stream seen so far that is a prefix of `text`. */
  state: number;
}

export interface StopPushResult {
  /** Text that can no longer be part of a stop sequence, safe to emit now. */
  text: string;
  /** A stop sequence matched; it and everything after it are discarded. */
  stopped: boolean;
}

function failureFunction(pattern: string): number[] {
  const failure = new Array<number>(pattern.length).fill(0);
  let k = 0;
  for (let i = 1; i < pattern.length; i++) {
    while (k > 0 && pattern[i] !== pattern[k]) k = failure[k - 1] ?? 0;
    if (pattern[i] === pattern[k]) k++;
    failure[i] = k;
  }
  return failure;
}

export class StopMatcher {
  readonly #patterns: StopPattern[];
  readonly #maxStopLength: number;
  /** Longest stream suffix that is still a prefix of some stop; never longer than maxStopLength - 1. */
  #held = '';
  #stopped = false;

  constructor(stops: readonly string[]) {
    const unique = [...new Set(stops.filter((s) => s.length > 0))];
    this.#patterns = unique.map((text) => ({ text, failure: failureFunction(text), state: 0 }));
    this.#maxStopLength = unique.reduce((max, s) => Math.max(max, s.length), 0);
  }

  /** Feeds newly decoded text. Returns text safe to emit now, and whether a stop sequence matched (the stop text and anything after it is never emitted). */
  push(text: string): StopPushResult {
    if (this.#stopped) return { text: '', stopped: true };
    if (this.#patterns.length === 0) return { text, stopped: false };

    // Positions are indices into buffer = held + text. Every pattern state is at most
    // held.length, because held is the longest of them, so matches never start before 0.
    const buffer = this.#held + text;
    let matchStart = Infinity;
    for (let pos = this.#held.length; pos < buffer.length; pos++) {
      // A match ending here or later starts at pos - maxStopLength + 1 at the earliest, so once
      // that is past the best match found, no other stop can occur earlier in the text.
      if (pos - this.#maxStopLength + 1 >= matchStart) break;
      const ch = buffer[pos];
      for (const p of this.#patterns) {
        let state = p.state;
        while (state > 0 && p.text[state] !== ch) state = p.failure[state - 1] ?? 0;
        if (p.text[state] === ch) state++;
        if (state === p.text.length) {
          matchStart = Math.min(matchStart, pos - state + 1);
          state = p.failure[state - 1] ?? 0;
        }
        p.state = state;
      }
    }

    if (matchStart !== Infinity) {
      this.#stopped = true;
      this.#held = '';
      return { text: buffer.slice(0, matchStart), stopped: true };
    }

    // Everything before the longest still-possible partial match can never become part of a
    // stop; releasing it now keeps streaming latency at a few characters.
    const hold = this.#patterns.reduce((max, p) => Math.max(max, p.state), 0);
    this.#held = buffer.slice(buffer.length - hold);
    return { text: buffer.slice(0, buffer.length - hold), stopped: false };
  }

  /** End of generation without a stop: returns the held-back tail. */
  flush(): string {
    const tail = this.#held;
    this.#held = '';
    for (const p of this.#patterns) p.state = 0;
    return tail;
  }
}
