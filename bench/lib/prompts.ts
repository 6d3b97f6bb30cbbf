// Prompts for the concurrency bench: windows of the model's own training text, so the model
// continues them naturally. The list is a pure function of (text, count, seed): every
// concurrency level and both servers get the same sequence. Windows start at distinct word
// boundaries scattered over the whole text, so no two share their first tokens and the
// prefix cache (blocks hash-chained from the first token) cannot serve one from another.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './server.js';

/** The corpus the shipped model was trained on (shared/ sits beside the project). */
export const SHAKESPEARE = process.env.BENCH_TEXT ?? join(ROOT, '../shared/data/tinyshakespeare.txt');

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface PromptOptions {
  count: number;
  minChars: number;
  maxChars: number;
  seed: number;
}

/**
 * `count` windows of `text`, each `minChars`..`maxChars` characters long, starting at a word
 * (after a space or newline), no two at the same offset. The text must be ASCII: the shipped
 * tokenizer is byte-level, so a window's length is its token count.
 */
export function shakespearePrompts(text: string, { count, minChars, maxChars, seed }: PromptOptions): string[] {
  if (![...text].every((c) => c.charCodeAt(0) < 0x80)) throw new Error('prompt text is not ASCII: lengths would not be token counts');
  if (text.length < count * 4 + maxChars) throw new Error(`prompt text too short for ${count} distinct windows`);
  const random = prng(seed);
  const used = new Set<number>();
  const prompts: string[] = [];
  while (prompts.length < count) {
    let start = Math.floor(random() * (text.length - maxChars * 2));
    while (start > 0 && !/[ \n]/.test(text[start - 1]!)) start++;
    while (text[start] === ' ' || text[start] === '\n') start++;
    if (used.has(start)) continue;
    used.add(start);
    const length = minChars + Math.floor(random() * (maxChars - minChars + 1));
    prompts.push(text.slice(start, start + length));
  }
  return prompts;
}

export function readShakespeare(): string {
  try {
    return readFileSync(SHAKESPEARE, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the prompt corpus ${SHAKESPEARE} (set BENCH_TEXT to its path): ${(err as Error).message}`);
  }
}
