// K/V block payloads for the entry format: exact float32, float16, or int8 with one float32
// scale per token per head (symmetric absmax over head_dim, as llama.cpp's q8_0 over 32
// values). Per-token scales were chosen over per-block ones by measured error: bench/tiers-fidelity.ts.
import { type KvData, type KvDType, allocKv } from '../layout.js';
import { type CodecId, type EntryDims, payloadBytes } from '../entry/format.js';
import { float32ArrayToHalf, halfArrayToFloat32 } from '../../float16.js';

/** The codecs the compressed tier may use (exact float32 leaves RAM only for disk). */
export type CompressedCodec = Extract<CodecId, 'int8' | 'float16'>;

const elementsOf = (d: EntryDims) => d.kvHeads * d.tokens * d.headDim;

function checkTensors(tensors: readonly KvData[], dims: EntryDims, dtype: KvDType): void {
  if (tensors.length !== 2 * dims.layers) throw new RangeError(`expected ${2 * dims.layers} tensors, got ${tensors.length}`);
  const n = elementsOf(dims);
  for (const t of tensors) {
    if (t.length !== n) throw new RangeError(`tensor of ${t.length} elements, expected ${n}`);
    if ((dtype === 'float32') !== t instanceof Float32Array) throw new TypeError(`tensor is not ${dtype}`);
  }
}

/** A view of `bytes` as T, copied first if its offset is not aligned for T. */
function viewAs<T extends Float32Array | Uint16Array | Int8Array>(
  ctor: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number },
  bytes: Uint8Array,
  offset: number,
  count: number,
): T {
  const at = bytes.byteOffset + offset;
  if (at % ctor.BYTES_PER_ELEMENT === 0) return new ctor(bytes.buffer, at, count);
  const copy = bytes.slice(offset, offset + count * ctor.BYTES_PER_ELEMENT);
  return new ctor(copy.buffer, 0, count);
}

const asBytes = (t: KvData) => new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
const asFloat32 = (t: KvData, scratch: Float32Array) => (t instanceof Float32Array ? t : halfArrayToFloat32(t, scratch));

/** Encodes 2 × layers tensors [kvHeads, tokens, headDim] of `dtype` into a payload of `codec`. */
export function encodePayload(codec: CodecId, tensors: readonly KvData[], dims: EntryDims, dtype: KvDType): Uint8Array {
  checkTensors(tensors, dims, dtype);
  if (codec === 'float32' && dtype !== 'float32') throw new RangeError('float32 payload for a float16 cache');
  const out = new Uint8Array(payloadBytes(codec, dims));
  const n = elementsOf(dims);
  if (codec === 'int8') {
    quantizeInt8(tensors, dims, out);
  } else if (codec === dtype) {
    for (const [i, t] of tensors.entries()) out.set(asBytes(t), i * t.byteLength);
  } else {
    // float32 cache stored as float16.
    for (const [i, t] of tensors.entries()) out.set(asBytes(float32ArrayToHalf(t as Float32Array)), i * 2 * n);
  }
  return out;
}

/**
 * The exact payload (codec = the cache's dtype) as parts for encodeEntry(): the tensors' own
 * bytes, copied once, into the entry, where encodePayload() would copy them twice.
 */
export function exactPayloadParts(tensors: readonly KvData[], dims: EntryDims, dtype: KvDType): Uint8Array[] {
  checkTensors(tensors, dims, dtype);
  return tensors.map(asBytes);
}

/**
 * Restores the tensors from a payload, as `dtype`: one allocation (a slab) with 2 × layers
 * views, as the pool keeps a block. `inPlace`: an exact payload is read where it is, without a
 * copy (the caller owns the buffer and hands it on whole).
 */
export function decodePayload(codec: CodecId, payload: Uint8Array, dims: EntryDims, dtype: KvDType, inPlace = false): KvData[] {
  if (payload.length !== payloadBytes(codec, dims)) throw new RangeError(`payload of ${payload.length} bytes, ${codec} needs ${payloadBytes(codec, dims)}`);
  const n = elementsOf(dims);
  const count = 2 * dims.layers * n;
  let slab: KvData;
  if (codec === 'int8') {
    const values = dequantizeInt8(payload, dims);
    slab = dtype === 'float32' ? values : float32ArrayToHalf(values);
  } else if (codec === dtype && inPlace && payload.byteOffset % (dtype === 'float32' ? 4 : 2) === 0) {
    slab = dtype === 'float32' ? new Float32Array(payload.buffer, payload.byteOffset, count) : new Uint16Array(payload.buffer, payload.byteOffset, count);
  } else if (codec === dtype) {
    slab = allocKv(dtype, count);
    asBytes(slab).set(payload);
  } else if (codec === 'float16' && dtype === 'float32') {
    slab = halfArrayToFloat32(viewAs(Uint16Array, payload, 0, count));
  } else {
    throw new RangeError(`${codec} payload cannot restore a ${dtype} cache`);
  }
  return Array.from({ length: 2 * dims.layers }, (_, i) => slab.subarray(i * n, (i + 1) * n));
}

/** Layout: float32 scales, one per (tensor, head, token), then the int8 values in tensor order. */
function quantizeInt8(tensors: readonly KvData[], dims: EntryDims, out: Uint8Array): void {
  const { headDim: d, kvHeads, tokens } = dims;
  const groups = kvHeads * tokens;
  const scales = new Float32Array(out.buffer, out.byteOffset, tensors.length * groups);
  const q = new Int8Array(out.buffer, out.byteOffset + 4 * scales.length, tensors.length * groups * d);
  // Only a float16 cache needs room to widen a tensor into.
  const scratch = tensors[0] instanceof Float32Array ? new Float32Array(0) : new Float32Array(groups * d);
  for (let t = 0; t < tensors.length; t++) {
    const x = asFloat32(tensors[t]!, scratch);
    for (let g = 0; g < groups; g++) {
      const from = g * d;
      let max = 0;
      for (let i = from; i < from + d; i++) {
        const v = x[i]!;
        const a = v < 0 ? -v : v;
        if (a > max) max = a;
      }
      const base = t * groups * d;
      // A group of zeros (or values too small to scale) stays all zero.
      const inv = max > 0 ? 127 / max : 0;
      scales[t * groups + g] = max / 127;
      if (!Number.isFinite(inv)) continue;
      // Rounds half away from zero; |0 truncates (|v| ≤ 127.5 here) about twice as fast as Math.round.
      for (let i = from; i < from + d; i++) {
        const v = x[i]! * inv;
        q[base + i] = v < 0 ? (v - 0.5) | 0 : (v + 0.5) | 0;
      }
    }
  }
}

function dequantizeInt8(payload: Uint8Array, dims: EntryDims): Float32Array {
  const { headDim: d, kvHeads, tokens, layers } = dims;
  const groups = 2 * layers * kvHeads * tokens;
  const scales = viewAs(Float32Array, payload, 0, groups);
  const q = viewAs(Int8Array, payload, 4 * groups, groups * d);
  const out = new Float32Array(groups * d);
  for (let g = 0; g < groups; g++) {
    const s = scales[g]!;
    for (let i = g * d; i < (g + 1) * d; i++) out[i] = q[i]! * s;
  }
  return out;
}
