// The protobuf wire format, as much of it as kvserve needs to read and edit ONNX models
// without an ONNX library: split a message into its fields (payloads stay views into the
// buffer), and encode fields back. Every other reader and writer of ONNX files builds on it.
//
//   field on the wire:  tag = varint(number << 3 | wireType), then
//     wireType 0: varint | 1: 8 bytes | 2: varint length + bytes | 5: 4 bytes

export interface Field {
  no: number;
  wireType: number;
  /** Wire type 0: the varint's value (exact up to 2^53, which no length or dimension reaches). */
  value: number;
  /** Wire type 2: the bytes inside the length; 1 and 5: the fixed bytes; 0: empty. */
  data: Uint8Array;
}

/**
 * A varint at `pos`: [value, position after it]. Values up to 2^53 are exact; a longer one is
 * read as a signed int64 (onnx writes a negative int, such as axis = -2, as ten bytes).
 */
export function readVarint(buf: Uint8Array, pos: number): [value: number, next: number] {
  let value = 0;
  let scale = 1;
  const start = pos;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw new Error('protobuf: truncated varint');
    const byte = buf[pos++]!;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return [i < 7 ? value : wide(buf, start, pos), pos];
    scale *= 128;
  }
  throw new Error('protobuf: varint longer than 10 bytes');
}

function wide(buf: Uint8Array, from: number, to: number): number {
  let v = 0n;
  for (let i = to - 1; i >= from; i--) v = (v << 7n) | BigInt(buf[i]! & 0x7f);
  return Number(BigInt.asIntN(64, v));
}

export function varint(n: number): number[] {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`protobuf: cannot encode ${n} as a varint`);
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** The top-level fields of a message. */
export function fields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const [tag, afterTag] = readVarint(buf, pos);
    const no = Math.floor(tag / 8);
    const wireType = tag % 8;
    let start = afterTag;
    let end: number;
    let value = 0;
    if (wireType === 0) [value, end] = readVarint(buf, afterTag);
    else if (wireType === 1) end = afterTag + 8;
    else if (wireType === 5) end = afterTag + 4;
    else if (wireType === 2) {
      const [length, afterLength] = readVarint(buf, afterTag);
      start = afterLength;
      end = afterLength + length;
    } else throw new Error(`protobuf: unsupported wire type ${wireType}`);
    if (end > buf.length) throw new Error('protobuf: truncated field');
    out.push({ no, wireType, value, data: wireType === 0 ? new Uint8Array(0) : buf.subarray(start, end) });
    pos = end;
  }
  return out;
}

/** A message made of `fs` (payloads copied once, into one buffer). */
export function encode(fs: readonly Field[]): Uint8Array {
  const heads = fs.map((f) =>
    Uint8Array.from([...varint(f.no * 8 + f.wireType), ...(f.wireType === 0 ? varint(f.value) : f.wireType === 2 ? varint(f.data.length) : [])]),
  );
  let size = 0;
  for (const [i, f] of fs.entries()) size += heads[i]!.length + (f.wireType === 0 ? 0 : f.data.length);
  const out = new Uint8Array(size);
  let pos = 0;
  for (const [i, f] of fs.entries()) {
    out.set(heads[i]!, pos);
    pos += heads[i]!.length;
    if (f.wireType === 0) continue;
    out.set(f.data, pos);
    pos += f.data.length;
  }
  return out;
}

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

export const text = (f: Field): string => utf8Decoder.decode(f.data);
export const stringField = (no: number, s: string): Field => ({ no, wireType: 2, value: 0, data: utf8Encoder.encode(s) });
export const messageField = (no: number, fs: readonly Field[]): Field => ({ no, wireType: 2, value: 0, data: encode(fs) });
export const varintField = (no: number, n: number): Field => ({ no, wireType: 0, value: n, data: new Uint8Array(0) });

/** Repeated int64 (dims, ints): packed (wire type 2) or one varint per field. */
export function int64s(fs: readonly Field[], no: number): number[] {
  const out: number[] = [];
  for (const f of fs) {
    if (f.no !== no) continue;
    if (f.wireType === 0) out.push(f.value);
    else
      for (let pos = 0; pos < f.data.length; ) {
        const [v, next] = readVarint(f.data, pos);
        out.push(v);
        pos = next;
      }
  }
  return out;
}
