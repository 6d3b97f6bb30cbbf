// IEEE 754 binary16 <-> float32 conversion. onnxruntime-node hands float16 tensors (logits, KV
// cache) to JS as raw Uint16Array bits because Node 20 has no Float16Array, so every fp16 model
// output crosses this module before sampling; the hot path is a table lookup on raw bits.

/** Float32 bit patterns for all 65536 half bit patterns; built on first bulk conversion. */
let table: Uint32Array | undefined;

// Working with bit patterns (not JS numbers) keeps NaN payloads intact, so half -> float32 -> half
// is the identity on all 65536 inputs, and avoids a double -> float32 rounding per element.
function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalise into a float32 normal (every half subnormal is a float32 normal).
  let e = 113;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

function getTable(): Uint32Array {
  if (table === undefined) {
    const t = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = halfBitsToFloatBits(h);
    table = t;
  }
  return table;
}

/** Decodes one binary16 bit pattern (only the low 16 bits of `bits` are used). */
export function halfToFloat(bits: number): number {
  const h = bits & 0xffff;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/**
 * Decodes `src` into `dst` (or a new array). Returns `dst` itself when the lengths match, else a
 * view of its first `src.length` elements, so a caller can pass one oversized scratch buffer.
 */
export function halfArrayToFloat32(src: Uint16Array, dst?: Float32Array): Float32Array {
  const n = src.length;
  const out = dst ?? new Float32Array(n);
  if (out.length < n) {
    throw new RangeError(`halfArrayToFloat32: dst has ${out.length} elements, need ${n}`);
  }
  const t = getTable();
  // Writing through an integer view copies bits exactly (a Float32Array store of a JS number
  // may canonicalise NaN).
  const bits = new Uint32Array(out.buffer, out.byteOffset, n);
  for (let i = 0; i < n; i++) bits[i] = t[src[i]!]!;
  return out.length === n ? out : out.subarray(0, n);
}

/** Encodes float32 values as binary16 bits, rounding to nearest, ties to even. */
export function float32ArrayToHalf(src: Float32Array): Uint16Array {
  const n = src.length;
  const out = new Uint16Array(n);
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let i = 0; i < n; i++) out[i] = floatBitsToHalfBits(bits[i]!);
  return out;
}

function floatBitsToHalfBits(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const mant = f & 0x7fffff;
  if (exp === 0xff) {
    // Keep the top payload bits; force a mantissa bit so a NaN never truncates to infinity.
    if (mant === 0) return sign | 0x7c00;
    const m = mant >>> 13;
    return sign | 0x7c00 | (m === 0 ? 0x200 : m);
  }
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Result is a half subnormal (or zero): units of 2^-24. Below 2^-25 everything rounds to 0,
    // and float32 subnormals land here too (exp 0 => e = -112).
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e; // 14..24
    const h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    // A carry out of the subnormal range yields 0x400, the smallest normal: still correct.
    return sign | (rem > half || (rem === half && (h & 1) === 1) ? h + 1 : h);
  }
  const h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A mantissa carry propagates into the exponent; from 0x7bff it correctly becomes infinity.
  return sign | (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1) ? h + 1 : h);
}
