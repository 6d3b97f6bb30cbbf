// Deterministic encoded entries for the disk tier's tests and its crash child: an entry's
// whole content follows from its key and size, so a reader can tell a served entry is exactly
// the one written under that key.
import { type Entry, encodeEntry, payloadBytes } from '../../../../src/core/kv/entry/format.js';

export const FP = new Uint8Array(32).fill(0x5a);
export const OTHER_FP = new Uint8Array(32).fill(0xa5);

function seedOf(key: string): number {
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
  return h || 1;
}

/** An entry of `tokens` positions (float16, 1 layer, 2 heads, 64 dims: 512 payload bytes per token). */
export function fixtureEntry(key: string, tokens: number, fingerprint = FP): Entry {
  const dims = { layers: 1, kvHeads: 2, headDim: 64, tokens };
  const payload = new Uint8Array(payloadBytes('float16', dims));
  let s = seedOf(key);
  const words = new Uint32Array(payload.buffer);
  for (let i = 0; i < words.length; i++) words[i] = s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  return {
    kind: key.startsWith('s') ? 'session' : 'prefix',
    key,
    tenantSalt: new Uint8Array([1, 2, 3]),
    tokens: Int32Array.from({ length: tokens }, (_, i) => (seedOf(key) + i) & 0xffff),
    createdMs: 1_700_000_000_000,
    fingerprint,
    codec: 'float16',
    dtype: 'float16',
    dims,
    payload,
  };
}

export function fixtureBytes(key: string, tokens: number, fingerprint = FP): Uint8Array {
  return encodeEntry(fixtureEntry(key, tokens, fingerprint));
}

/** Whether `bytes` are exactly the fixture entry of `key` (any size). */
export function isFixture(key: string, bytes: Uint8Array): boolean {
  const tokens = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(28, true);
  const want = fixtureBytes(key, tokens);
  return want.length === bytes.length && Buffer.compare(Buffer.from(want), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)) === 0;
}
