// Seeded PRNG for token sampling, so an OpenAI `seed` makes generation reproducible. Math.random
// cannot be seeded, and sampling needs only speed and good equidistribution, not secrecy, so
// this is xoshiro128** (Blackman & Vigna, 2018): 128-bit state, period 2^128 - 1, 32-bit ops only.

import { randomBytes } from 'node:crypto';

const TWO_POW_32 = 4294967296;

/** MurmurHash3's fmix32: a bijection on uint32 with full avalanche. */
function fmix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

export class Rng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  /** `seed`: any non-negative safe integer (all 53 bits matter). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new RangeError(`seed must be a non-negative safe integer (got ${seed})`);
    }
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    // Two Feistel rounds over (low word, high word): a bijection, so distinct seeds always give
    // distinct states, and both words end up depending on all 53 seed bits (xoshiro128**'s
    // first output is a function of s1 alone, so s1 must not see only the high word).
    let a = fmix32((lo + 0x9e3779b9) >>> 0);
    let b = fmix32((hi + 0x3c6ef372) >>> 0);
    b = (b ^ fmix32((a ^ 0xdaa66d2b) >>> 0)) >>> 0;
    a = (a ^ fmix32((b ^ 0x78dde6e4) >>> 0)) >>> 0;
    this.#s0 = a;
    this.#s1 = b;
    this.#s2 = fmix32((a + 0x27d4eb2f) >>> 0) ^ b;
    this.#s3 = fmix32((b + 0x165667b1) >>> 0) ^ a;
    // xoshiro's only forbidden state is all-zero.
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s3 = 1;
  }

  /** Next uniformly distributed uint32. */
  nextUint32(): number {
    const s0 = this.#s0;
    const s1 = this.#s1;
    const s2 = this.#s2;
    const s3 = this.#s3;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    this.#s1 = (s1 ^ n2) >>> 0;
    this.#s0 = (s0 ^ n3) >>> 0;
    this.#s2 = (n2 ^ t) >>> 0;
    this.#s3 = ((n3 << 11) | (n3 >>> 21)) >>> 0;
    return result;
  }

  /**
   * Uniform in [0, 1) with 2^-32 resolution: finer than any token probability the float32
   * logits can express, and one state step per draw.
   */
  next(): number {
    return this.nextUint32() / TWO_POW_32;
  }
}

/** A fresh seed from the OS CSPRNG, for requests that did not ask for reproducibility. */
export function randomSeed(): number {
  const b = randomBytes(8);
  // 21 high bits + 32 low bits = a uniformly random safe integer.
  return (b.readUInt32LE(4) & 0x1fffff) * TWO_POW_32 + b.readUInt32LE(0);
}
