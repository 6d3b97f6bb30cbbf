// Masks for string bodies, where almost every token is allowed. Every string body allows the same
// tokens up to its closing quote, whatever the schema or the stack, so a vocabulary's tokens are
// sorted once into those that stay inside and those that close the string (and where their rest starts).
import { type Frame, remaining, step, stringProbe } from './automaton.js';
import type { TokenVocab } from './vocab.js';

interface StringTable {
  /** Ids that stay inside a string body, with the bytes each leaves the string needing to close (1, more mid-escape or mid-character). */
  inside: Int32Array;
  insideCost: Uint8Array;
  maxInsideCost: number;
  /** Ids that close the string, and the offset of their bytes after the closing quote. */
  exits: Int32Array;
  exitAt: Int32Array;
  /** Every id not in `inside` (exits, invalid in a string, special), ascending. */
  outside: Int32Array;
}
const tables = new WeakMap<TokenVocab, StringTable>();

function tableFor(vocab: TokenVocab): StringTable {
  let t = tables.get(vocab);
  if (t !== undefined) return t;
  const { start, exit } = stringProbe();
  const inside: number[] = [];
  const insideCost: number[] = [];
  const exits: number[] = [];
  const exitAt: number[] = [];
  const outside: number[] = [];
  for (let id = 0; id < vocab.size; id++) {
    const bytes = vocab.bytes[id];
    let f: Frame | null = bytes == null ? null : start;
    let closedAt = -1;
    for (let i = 0; f !== null && i < bytes!.length && closedAt < 0; i++) {
      f = step(f, bytes![i]!);
      if (f === exit) closedAt = i + 1;
    }
    if (f === null || closedAt >= 0) outside.push(id);
    if (f === null) continue;
    if (closedAt >= 0) {
      exits.push(id);
      exitAt.push(closedAt);
    } else {
      inside.push(id);
      insideCost.push(remaining(f));
    }
  }
  t = {
    inside: Int32Array.from(inside),
    insideCost: Uint8Array.from(insideCost),
    maxInsideCost: Math.max(0, ...insideCost),
    exits: Int32Array.from(exits),
    exitAt: Int32Array.from(exitAt),
    outside: Int32Array.from(outside),
  };
  tables.set(vocab, t);
  return t;
}

/** The state after each closing token from a string body `start`, or null where the enclosing value refuses its rest. */
function exitStates(start: Frame, vocab: TokenVocab, t: StringTable): (Frame | null)[] {
  const up = start.up!;
  const out: (Frame | null)[] = [];
  for (let k = 0; k < t.exits.length; k++) {
    const bytes = vocab.bytes[t.exits[k]!]!;
    let f: Frame | null = up;
    for (let i = t.exitAt[k]!; f !== null && i < bytes.length; i++) f = step(f, bytes[i]!);
    out.push(f);
  }
  return out;
}

/**
 * The disallowed ids of a string body's mask and the most bytes an allowed token leaves to
 * write: only the closing tokens' tails are stepped, through the enclosing value.
 */
export function stringBodyDenied(start: Frame, vocab: TokenVocab): { denied: Int32Array; maxAfter: number } {
  const t = tableFor(vocab);
  let maxAfter = t.maxInsideCost + remaining(start.up!);
  const allowedExits = new Set<number>();
  exitStates(start, vocab, t).forEach((f, k) => {
    if (f === null) return;
    allowedExits.add(t.exits[k]!);
    maxAfter = Math.max(maxAfter, remaining(f));
  });
  const denied = allowedExits.size === 0 ? t.outside : t.outside.filter((id) => !allowedExits.has(id));
  return { denied, maxAfter };
}

/** Every allowed id from a string body `start` into ids/after with the bytes it leaves to write; returns the count. */
export function walkStringBody(start: Frame, vocab: TokenVocab, ids: Int32Array, after: Int32Array): number {
  const t = tableFor(vocab);
  const base = remaining(start.up!);
  let n = 0;
  for (let k = 0; k < t.inside.length; k++) {
    ids[n] = t.inside[k]!;
    after[n++] = t.insideCost[k]! + base;
  }
  exitStates(start, vocab, t).forEach((f, k) => {
    if (f === null) return;
    ids[n] = t.exits[k]!;
    after[n++] = remaining(f);
  });
  return n;
}
