// A GGUF v3 writer (ggml's model file format, little-endian): typed metadata key-value pairs,
// then tensor descriptors, then the tensors' bytes, each aligned to `general.alignment`.
// Tensors are float32, float16, or ggml's Q8_0 / Q4_0 blocks (./ggml-quant.ts); dimensions are given in ggml's order (ne[0] varies fastest,
// so a row-major [rows][cols] matrix is [cols, rows]).
import { closeSync, openSync, writeSync } from 'node:fs';
import { float32ArrayToHalf } from '../../src/core/float16.js';
import { Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK, quantizeQ4_0, quantizeQ8_0 } from './ggml-quant.js';

export const GGML_F32 = 0;
export const GGML_F16 = 1;
export const GGML_Q4_0 = 2;
export const GGML_Q8_0 = 8;
export type GgmlType = typeof GGML_F32 | typeof GGML_F16 | typeof GGML_Q4_0 | typeof GGML_Q8_0;

function byteSize(type: GgmlType, count: number): number {
  if (type === GGML_F32) return count * 4;
  if (type === GGML_F16) return count * 2;
  return (count / QK) * (type === GGML_Q8_0 ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES);
}

function encode(type: GgmlType, data: Float32Array): Uint8Array {
  const payload = type === GGML_F32 ? data : type === GGML_F16 ? float32ArrayToHalf(data) : type === GGML_Q8_0 ? quantizeQ8_0(data) : quantizeQ4_0(data);
  return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
}
const ALIGNMENT = 32;

// gguf_metadata_value_type
const T_UINT32 = 4;
const T_INT32 = 5;
const T_FLOAT32 = 6;
const T_BOOL = 7;
const T_STRING = 8;
const T_ARRAY = 9;

export type MetaValue = { u32: number } | { f32: number } | { bool: boolean } | { str: string } | { strs: string[] } | { i32s: ArrayLike<number> };

interface TensorEntry {
  name: string;
  ne: number[];
  type: GgmlType;
  data: Float32Array;
}

/** Little-endian byte builder. */
class Bytes {
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #room(n: number): void {
    if (this.length + n <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.length + n));
    grown.set(this.#buf.subarray(0, this.length));
    this.#buf = grown;
    this.#view = new DataView(grown.buffer);
  }
  u32(v: number): void {
    this.#room(4);
    this.#view.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number): void {
    this.#room(4);
    this.#view.setInt32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number): void {
    this.#room(8);
    this.#view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  f32(v: number): void {
    this.#room(4);
    this.#view.setFloat32(this.length, v, true);
    this.length += 4;
  }
  u8(v: number): void {
    this.#room(1);
    this.#buf[this.length++] = v;
  }
  bytes(b: Uint8Array): void {
    this.#room(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
  }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  padTo(alignment: number): void {
    while (this.length % alignment !== 0) this.u8(0);
  }
  result(): Uint8Array {
    return this.#buf.subarray(0, this.length);
  }
}

function writeValue(out: Bytes, v: MetaValue): void {
  if ('u32' in v) out.u32(T_UINT32), out.u32(v.u32);
  else if ('f32' in v) out.u32(T_FLOAT32), out.f32(v.f32);
  else if ('bool' in v) out.u32(T_BOOL), out.u8(v.bool ? 1 : 0);
  else if ('str' in v) out.u32(T_STRING), out.str(v.str);
  else if ('strs' in v) {
    out.u32(T_ARRAY);
    out.u32(T_STRING);
    out.u64(v.strs.length);
    for (const s of v.strs) out.str(s);
  } else {
    out.u32(T_ARRAY);
    out.u32(T_INT32);
    out.u64(v.i32s.length);
    for (let i = 0; i < v.i32s.length; i++) out.i32(v.i32s[i]!);
  }
}

const align = (n: number): number => Math.ceil(n / ALIGNMENT) * ALIGNMENT;

/** writeSync may write less than asked (large buffers): loop until all of `b` is out. */
function writeAll(fd: number, b: Uint8Array): number {
  for (let done = 0; done < b.length; ) done += writeSync(fd, b, done, b.length - done);
  return b.length;
}

export class GgufWriter {
  readonly #meta = new Map<string, MetaValue>();
  readonly #tensors: TensorEntry[] = [];

  meta(key: string, value: MetaValue): this {
    this.#meta.set(key, value);
    return this;
  }

  tensor(name: string, ne: number[], type: TensorEntry['type'], data: Float32Array): this {
    if (name.length > 64) throw new Error(`GGUF tensor name longer than 64 bytes: ${name}`);
    const count = ne.reduce((a, b) => a * b, 1);
    if (count !== data.length) throw new Error(`${name}: ${data.length} values for dimensions [${ne.join(', ')}]`);
    if ((type === GGML_Q4_0 || type === GGML_Q8_0) && ne[0]! % QK !== 0) throw new Error(`${name}: rows of ${ne[0]} do not split into blocks of ${QK}`);
    if (this.#tensors.some((t) => t.name === name)) throw new Error(`duplicate tensor ${name}`);
    this.#tensors.push({ name, ne, type, data });
    return this;
  }

  /** Writes the file; returns its size in bytes. */
  write(path: string): number {
    this.#meta.set('general.alignment', { u32: ALIGNMENT });
    const head = new Bytes();
    head.bytes(new TextEncoder().encode('GGUF'));
    head.u32(3);
    head.u64(this.#tensors.length);
    head.u64(this.#meta.size);
    for (const [key, value] of this.#meta) {
      head.str(key);
      writeValue(head, value);
    }
    let offset = 0;
    const sizes = this.#tensors.map((t) => byteSize(t.type, t.data.length));
    this.#tensors.forEach((t, i) => {
      head.str(t.name);
      head.u32(t.ne.length);
      for (const d of t.ne) head.u64(d);
      head.u32(t.type);
      head.u64(offset);
      offset = align(offset + sizes[i]!);
    });
    head.padTo(ALIGNMENT);
    const fd = openSync(path, 'w');
    try {
      let written = writeAll(fd, head.result());
      const zeros = new Uint8Array(ALIGNMENT);
      this.#tensors.forEach((t, i) => {
        written += writeAll(fd, encode(t.type, t.data));
        written += writeAll(fd, zeros.subarray(0, align(sizes[i]!) - sizes[i]!));
      });
      return written;
    } finally {
      closeSync(fd);
    }
  }
}
