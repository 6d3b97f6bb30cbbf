// The one binary form of a KV entry (prefix block or session) once it leaves the RAM pool:
// compressed RAM, disk and any later tier hold the same self-describing bytes, so moving an
// entry between tiers is a copy. Decoding never throws and never allocates past the input.
//
//   0  magic "\x89KVSE\r\n\x1a"  8 u16 version  10 u8 kind  11 u8 codec  12 u8 dtype  13 u8[3] 0
//   16 u32 layers  20 u32 kvHeads  24 u32 headDim  28 u32 tokens  32 u32 keyBytes  36 u32 saltBytes
//   40 u32 payloadBytes lo, 44 hi  48 f64 createdMs  56 fingerprint[32]  88 u32 0  92 u32 headerCrc
//   96 key (UTF-8) | salt | tokens (i32 × tokens) | payload   each padded to 8   | u32 crc
//
// Little-endian throughout. The header CRC lets a reader trust the lengths (and reject another
// model's file) from the first bytes alone; the final CRC covers everything before it.
import { endianness } from 'node:os';
import type { KvDType } from '../layout.js';
import { crc32 } from './checksum.js';

if (endianness() !== 'LE') throw new Error('kvserve entries hold little-endian typed arrays: big-endian hosts are not supported');

export const FORMAT_VERSION = 1;
export const FINGERPRINT_BYTES = 32;
export const MAX_KEY_BYTES = 4096;
export const MAX_SALT_BYTES = 1024;
const MAX_DIM = 1 << 16;
const MAX_TOKENS = 1 << 24;
const FIXED = 96;
const MAGIC = [0x89, 0x4b, 0x56, 0x53, 0x45, 0x0d, 0x0a, 0x1a] as const;
/** Bytes enough for inspectHeader to see the fixed header and any key. */
export const HEADER_PREFIX_BYTES = FIXED + MAX_KEY_BYTES;

export type EntryKind = 'prefix' | 'session';
/** How the payload stores the K/V values: exact float32 or float16 bits, or int8 with scales (codec.ts). */
export type CodecId = 'float32' | 'float16' | 'int8';
export type RejectReason = 'magic' | 'version' | 'truncated' | 'checksum' | 'fingerprint' | 'malformed';

/** 2 × layers tensors [kvHeads, tokens, headDim]. */
export interface EntryDims {
  layers: number;
  kvHeads: number;
  headDim: number;
  tokens: number;
}

export interface Entry {
  kind: EntryKind;
  /** Block hash, or the tenant-scoped session key. */
  key: string;
  tenantSalt: Uint8Array;
  /** Token ids, one per cached position (dims.tokens of them). */
  tokens: Int32Array;
  createdMs: number;
  fingerprint: Uint8Array;
  codec: CodecId;
  /** The dtype the values are restored to (the model's KV dtype). */
  dtype: KvDType;
  dims: EntryDims;
  /** Codec-specific bytes; decodeEntry returns a view of its input, not a copy. */
  payload: Uint8Array;
}

export interface EntryHeader extends Omit<Entry, 'payload' | 'tenantSalt' | 'tokens'> {
  /** The whole entry's length, as its header states it. */
  totalBytes: number;
}

export interface Rejected {
  rejected: RejectReason;
  detail: string;
}

const KINDS: readonly EntryKind[] = ['prefix', 'session'];
const CODECS: readonly CodecId[] = ['float32', 'float16', 'int8'];
const DTYPES: readonly KvDType[] = ['float32', 'float16'];

/** Payload length a codec needs for these dims: int8 carries one float32 scale per token per head. */
export function payloadBytes(codec: CodecId, dims: EntryDims): number {
  const elements = 2 * dims.layers * dims.kvHeads * dims.tokens * dims.headDim;
  if (codec === 'float32') return 4 * elements;
  if (codec === 'float16') return 2 * elements;
  return elements + 4 * (2 * dims.layers * dims.kvHeads * dims.tokens);
}

const pad8 = (n: number) => (n + 7) & ~7;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

interface Sections {
  key: number;
  salt: number;
  tokens: number;
  payload: number;
  crc: number;
  total: number;
}

function sections(keyBytes: number, saltBytes: number, tokens: number, payload: number): Sections {
  const key = FIXED;
  const salt = key + pad8(keyBytes);
  const tok = salt + pad8(saltBytes);
  const pay = tok + pad8(4 * tokens);
  const crc = pay + payload;
  return { key, salt, tokens: tok, payload: pay, crc, total: crc + 4 };
}

/** An entry to encode: its payload may come in parts (e.g. the tensors' own bytes), laid out in order. */
export type EncodableEntry = Omit<Entry, 'payload'> & { payload: Uint8Array | readonly Uint8Array[] };

/** Throws on a malformed input: that is a caller's bug, unlike a bad entry read back. */
export function encodeEntry(e: EncodableEntry): Uint8Array {
  const parts = e.payload instanceof Uint8Array ? [e.payload] : e.payload;
  const payloadLength = parts.reduce((n, p) => n + p.length, 0);
  const key = utf8.encode(e.key);
  const { dims } = e;
  const problem = fieldProblem(KINDS.indexOf(e.kind), CODECS.indexOf(e.codec), DTYPES.indexOf(e.dtype), dims, key.length, e.tenantSalt.length);
  if (problem) throw new RangeError(`cannot encode entry: ${problem}`);
  if (e.fingerprint.length !== FINGERPRINT_BYTES) throw new RangeError(`fingerprint must be ${FINGERPRINT_BYTES} bytes`);
  if (!Number.isFinite(e.createdMs)) throw new RangeError(`createdMs ${e.createdMs} is not finite`);
  if (e.tokens.length !== dims.tokens) throw new RangeError(`${e.tokens.length} token ids for ${dims.tokens} positions`);
  if (payloadLength !== payloadBytes(e.codec, dims)) throw new RangeError(`payload of ${payloadLength} bytes, ${e.codec} needs ${payloadBytes(e.codec, dims)}`);
  const s = sections(key.length, e.tenantSalt.length, dims.tokens, payloadLength);
  const out = new Uint8Array(s.total);
  const v = new DataView(out.buffer);
  out.set(MAGIC, 0);
  v.setUint16(8, FORMAT_VERSION, true);
  v.setUint8(10, KINDS.indexOf(e.kind) + 1);
  v.setUint8(11, CODECS.indexOf(e.codec) + 1);
  v.setUint8(12, DTYPES.indexOf(e.dtype) + 1);
  for (const [i, n] of [dims.layers, dims.kvHeads, dims.headDim, dims.tokens, key.length, e.tenantSalt.length].entries()) v.setUint32(16 + 4 * i, n, true);
  v.setUint32(40, payloadLength % 2 ** 32, true);
  v.setUint32(44, Math.floor(payloadLength / 2 ** 32), true);
  v.setFloat64(48, e.createdMs, true);
  out.set(e.fingerprint, 56);
  v.setUint32(92, crc32(out.subarray(0, 92)), true);
  out.set(key, s.key);
  out.set(e.tenantSalt, s.salt);
  out.set(new Uint8Array(e.tokens.buffer, e.tokens.byteOffset, 4 * dims.tokens), s.tokens);
  let at = s.payload;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  v.setUint32(s.crc, crc32(out.subarray(0, s.crc)), true);
  return out;
}

function fieldProblem(kind: number, codec: number, dtype: number, d: EntryDims, keyBytes: number, saltBytes: number): string | undefined {
  if (KINDS[kind] === undefined) return 'unknown kind';
  if (CODECS[codec] === undefined) return 'unknown codec';
  if (DTYPES[dtype] === undefined) return 'unknown dtype';
  if (CODECS[codec] === 'float32' && DTYPES[dtype] !== 'float32') return 'float32 payload for a float16 cache';
  for (const [name, n, max] of [
    ['layers', d.layers, MAX_DIM],
    ['kvHeads', d.kvHeads, MAX_DIM],
    ['headDim', d.headDim, MAX_DIM],
    ['tokens', d.tokens, MAX_TOKENS],
  ] as const) {
    if (!Number.isInteger(n) || n < 1 || n > max) return `${name} ${n} outside 1..${max}`;
  }
  if (keyBytes < 1 || keyBytes > MAX_KEY_BYTES) return `key of ${keyBytes} bytes outside 1..${MAX_KEY_BYTES}`;
  if (saltBytes > MAX_SALT_BYTES) return `tenant salt of ${saltBytes} bytes over ${MAX_SALT_BYTES}`;
  return undefined;
}

const reject = (rejected: RejectReason, detail: string): Rejected => ({ rejected, detail });

export function isRejected<T extends object>(r: T | Rejected): r is Rejected {
  return 'rejected' in r;
}

interface Fixed extends Omit<EntryHeader, 'key'> {
  keyBytes: number;
  saltBytes: number;
  payloadBytes: number;
}

/** The fixed header, validated: its checksum, fingerprint and every field it states. */
function parseFixed(bytes: Uint8Array, expectedFingerprint: Uint8Array): Fixed | Rejected {
  for (let i = 0; i < MAGIC.length && i < bytes.length; i++) if (bytes[i] !== MAGIC[i]) return reject('magic', 'not a kvserve entry');
  if (bytes.length < 10) return reject('truncated', `${bytes.length} bytes`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = v.getUint16(8, true);
  if (version !== FORMAT_VERSION) return reject('version', `format version ${version}, expected ${FORMAT_VERSION}`);
  if (bytes.length < FIXED) return reject('truncated', `${bytes.length} bytes, header needs ${FIXED}`);
  if (crc32(bytes.subarray(0, 92)) !== v.getUint32(92, true)) return reject('checksum', 'header checksum mismatch');
  const fingerprint = bytes.subarray(56, 56 + FINGERPRINT_BYTES);
  if (!sameBytes(fingerprint, expectedFingerprint)) return reject('fingerprint', 'written for another model');
  const [layers, kvHeads, headDim, tokens, keyBytes, saltBytes] = [0, 1, 2, 3, 4, 5].map((i) => v.getUint32(16 + 4 * i, true)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const dims = { layers, kvHeads, headDim, tokens };
  const [kind, codec, dtype] = [v.getUint8(10) - 1, v.getUint8(11) - 1, v.getUint8(12) - 1];
  const problem = fieldProblem(kind, codec, dtype, dims, keyBytes, saltBytes);
  if (problem) return reject('malformed', problem);
  if (v.getUint8(13) | v.getUint16(14, true) | v.getUint32(88, true)) return reject('malformed', 'reserved bytes set');
  const payload = v.getUint32(40, true) + v.getUint32(44, true) * 2 ** 32;
  const expected = payloadBytes(CODECS[codec]!, dims);
  if (payload !== expected) return reject('malformed', `payload of ${payload} bytes, ${CODECS[codec]} needs ${expected}`);
  const createdMs = v.getFloat64(48, true);
  if (!Number.isFinite(createdMs)) return reject('malformed', 'createdMs not finite');
  return {
    kind: KINDS[kind]!,
    createdMs,
    fingerprint: Uint8Array.from(fingerprint),
    codec: CODECS[codec]!,
    dtype: DTYPES[dtype]!,
    dims,
    keyBytes,
    saltBytes,
    payloadBytes: payload,
    totalBytes: sections(keyBytes, saltBytes, tokens, payload).total,
  };
}

function decodeKey(bytes: Uint8Array, keyBytes: number): string | Rejected {
  try {
    return strictUtf8.decode(bytes.subarray(FIXED, FIXED + keyBytes));
  } catch {
    return reject('malformed', 'key is not UTF-8');
  }
}

/**
 * Validates the fixed header of `bytes` (which may be just the first HEADER_PREFIX_BYTES of an
 * entry) and reads its key: enough to index a file without reading its payload. Neither the
 * key nor the payload is covered by a checksum checked here: decodeEntry checks them.
 */
export function inspectHeader(bytes: Uint8Array, expectedFingerprint: Uint8Array): EntryHeader | Rejected {
  const f = parseFixed(bytes, expectedFingerprint);
  if (isRejected(f)) return f;
  if (bytes.length < FIXED + f.keyBytes) return reject('truncated', `${bytes.length} bytes, key needs ${FIXED + f.keyBytes}`);
  const key = decodeKey(bytes, f.keyBytes);
  if (typeof key !== 'string') return key;
  const { keyBytes: _k, saltBytes: _s, payloadBytes: _p, ...header } = f;
  return { ...header, key };
}

/** Decodes and fully validates one entry. Anything wrong is a rejection, never an exception. */
export function decodeEntry(bytes: Uint8Array, expectedFingerprint: Uint8Array): Entry | Rejected {
  const f = parseFixed(bytes, expectedFingerprint);
  if (isRejected(f)) return f;
  if (bytes.length < f.totalBytes) return reject('truncated', `${bytes.length} bytes, entry needs ${f.totalBytes}`);
  if (bytes.length > f.totalBytes) return reject('malformed', `${bytes.length - f.totalBytes} bytes after the entry`);
  const s = sections(f.keyBytes, f.saltBytes, f.dims.tokens, f.payloadBytes);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (crc32(bytes.subarray(0, s.crc)) !== v.getUint32(s.crc, true)) return reject('checksum', 'entry checksum mismatch');
  const key = decodeKey(bytes, f.keyBytes);
  if (typeof key !== 'string') return key;
  const tokens = new Int32Array(f.dims.tokens);
  new Uint8Array(tokens.buffer).set(bytes.subarray(s.tokens, s.tokens + 4 * f.dims.tokens));
  return {
    kind: f.kind,
    key,
    tenantSalt: bytes.slice(s.salt, s.salt + f.saltBytes),
    tokens,
    createdMs: f.createdMs,
    fingerprint: f.fingerprint,
    codec: f.codec,
    dtype: f.dtype,
    dims: f.dims,
    payload: bytes.subarray(s.payload, s.crc),
  };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
