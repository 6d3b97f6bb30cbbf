// ggml's block formats Q8_0 and Q4_0 (32 weights per block along a row, one float16 scale),
// encoded as llama.cpp's reference quantizers do (ggml-quants.c quantize_row_q8_0_ref /
// quantize_row_q4_0_ref), so that bench:quant can give node-llama-cpp the same reduced precisions
// kvserve's tools/quantize.py writes: node-llama-cpp's npm package has no quantize command.
import { float32ArrayToHalf } from '../../src/core/float16.js';

export const QK = 32;
/** Bytes of one block: the float16 scale, then 32 int8 (Q8_0) or 16 bytes of nibbles (Q4_0). */
export const Q8_0_BLOCK_BYTES = 2 + QK;
export const Q4_0_BLOCK_BYTES = 2 + QK / 2;

const half = (v: number): number => float32ArrayToHalf(Float32Array.of(v))[0]!;
const halfToFloat = (h: number): number => {
  const f = new Float32Array(1);
  // Exact: every half is a float32; decode by hand to avoid another table.
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  f[0] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  return f[0]!;
};

function checkLength(n: number): void {
  if (n % QK !== 0) throw new Error(`${n} values do not split into blocks of ${QK}`);
}

/** Q8_0: d = max|x| / 127, q = round(x / d). */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  checkLength(x.length);
  const out = new Uint8Array((x.length / QK) * Q8_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0, o = 0; b < x.length; b += QK, o += Q8_0_BLOCK_BYTES) {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[b + j]!));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    view.setUint16(o, half(d), true);
    for (let j = 0; j < QK; j++) view.setInt8(o + 2 + j, Math.round(x[b + j]! * id));
  }
  return out;
}

/**
 * Q4_0: the value of largest magnitude maps to -8 (d = it / -8), q = min(15, trunc(x / d + 8.5));
 * byte j holds element j in its low nibble and element j + 16 in its high one.
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  checkLength(x.length);
  const out = new Uint8Array((x.length / QK) * Q4_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0, o = 0; b < x.length; b += QK, o += Q4_0_BLOCK_BYTES) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = x[b + j]!;
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = max / -8;
    const id = d ? 1 / d : 0;
    view.setUint16(o, half(d), true);
    for (let j = 0; j < QK / 2; j++) {
      const lo = Math.min(15, Math.trunc(x[b + j]! * id + 8.5));
      const hi = Math.min(15, Math.trunc(x[b + QK / 2 + j]! * id + 8.5));
      out[o + 2 + j] = lo | (hi << 4);
    }
  }
  return out;
}

/** Decodes Q8_0 or Q4_0 blocks back to float32 (for tests). */
export function dequantize(type: 'q8_0' | 'q4_0', bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = type === 'q8_0' ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES;
  for (let b = 0, o = 0; b < count; b += QK, o += size) {
    const d = halfToFloat(view.getUint16(o, true));
    for (let j = 0; j < QK; j++) {
      if (type === 'q8_0') out[b + j] = view.getInt8(o + 2 + j) * d;
      else {
        const byte = bytes[o + 2 + (j % (QK / 2))]!;
        out[b + j] = ((j < QK / 2 ? byte & 0x0f : byte >> 4) - 8) * d;
      }
    }
  }
  return out;
}
