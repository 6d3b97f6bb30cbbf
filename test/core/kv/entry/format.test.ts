// The entry format: every entry round-trips, and every damaged or foreign input is rejected
// with the reason a reader should count, never by an exception and never after allocating
// what a forged length asks for.
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { crc32, crc32Js } from '../../../../src/core/kv/entry/checksum.js';
import {
  type CodecId,
  type Entry,
  type RejectReason,
  HEADER_PREFIX_BYTES,
  decodeEntry,
  encodeEntry,
  inspectHeader,
  isRejected,
  payloadBytes,
} from '../../../../src/core/kv/entry/format.js';

const FP = new Uint8Array(32).fill(7);
const OTHER_FP = new Uint8Array(32).fill(8);

const arbEntry: fc.Arbitrary<Entry> = fc
  .record({
    kind: fc.constantFrom('prefix' as const, 'session' as const),
    key: fc.string({ minLength: 1, maxLength: 60, unit: 'binary' }),
    tenantSalt: fc.uint8Array({ maxLength: 40 }),
    createdMs: fc.integer({ min: 0, max: 2 ** 45 }),
    codecDtype: fc.constantFrom<[CodecId, 'float32' | 'float16']>(
      ['float32', 'float32'],
      ['float16', 'float32'],
      ['float16', 'float16'],
      ['int8', 'float32'],
      ['int8', 'float16'],
    ),
    dims: fc.record({
      layers: fc.integer({ min: 1, max: 3 }),
      kvHeads: fc.integer({ min: 1, max: 3 }),
      headDim: fc.integer({ min: 1, max: 8 }),
      tokens: fc.integer({ min: 1, max: 9 }),
    }),
    seed: fc.integer(),
  })
  .map(({ codecDtype: [codec, dtype], dims, seed, ...rest }) => {
    const payload = new Uint8Array(payloadBytes(codec, dims));
    for (let i = 0; i < payload.length; i++) payload[i] = (seed + i * 2654435761) >>> 24;
    const tokens = Int32Array.from({ length: dims.tokens }, (_, i) => (seed ^ (i * 40503)) | 0);
    return { ...rest, codec, dtype, dims, payload, tokens, fingerprint: FP };
  })
  .filter((e) => new TextEncoder().encode(e.key).length >= 1);

const decoded = (e: Entry) => ({
  ...e,
  key: e.key,
  tenantSalt: [...e.tenantSalt],
  tokens: [...e.tokens],
  payload: [...e.payload],
  fingerprint: [...e.fingerprint],
});

function expectReject(t: Test, r: ReturnType<typeof decodeEntry>, reason: RejectReason | readonly RejectReason[], msg: string) {
  const reasons = typeof reason === 'string' ? [reason] : reason;
  if (!isRejected(r)) return t.fail(`${msg}: accepted`);
  if (!reasons.includes(r.rejected)) return t.fail(`${msg}: rejected for ${r.rejected} (${r.detail}), expected ${reasons.join('|')}`);
  return true;
}

/** Recomputes both checksums after a deliberate header edit, so only the edit is wrong. */
function resign(bytes: Uint8Array): Uint8Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  v.setUint32(92, crc32(bytes.subarray(0, 92)), true);
  if (bytes.length >= 100) v.setUint32(bytes.length - 4, crc32(bytes.subarray(0, bytes.length - 4)), true);
  return bytes;
}

t.test('CRC-32: the JS fallback equals zlib on any input', async (t) => {
  t.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926, 'check value of CRC-32/ISO-HDLC');
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), (data, seed) => crc32Js(data, seed) === crc32(data, seed)),
  );
});

t.test('round trip: decode(encode(e)) = e, from any byte offset', async (t) => {
  fc.assert(
    fc.property(arbEntry, fc.integer({ min: 0, max: 7 }), (e, shift) => {
      const bytes = encodeEntry(e);
      const shifted = new Uint8Array(bytes.length + shift);
      shifted.set(bytes, shift);
      const back = decodeEntry(shifted.subarray(shift), FP);
      if (isRejected(back)) throw new Error(`rejected: ${back.detail}`);
      t.same(decoded(back), decoded(e));
      const header = inspectHeader(bytes.subarray(0, HEADER_PREFIX_BYTES), FP);
      if (isRejected(header) || header.totalBytes !== bytes.length || header.key !== e.key) throw new Error('header disagrees');
    }),
    { numRuns: 300 },
  );
});

t.test('truncated at any length: truncated', async (t) => {
  fc.assert(
    fc.property(arbEntry, fc.nat(), (e, cut) => {
      const bytes = encodeEntry(e);
      const n = cut % bytes.length;
      expectReject(t, decodeEntry(bytes.subarray(0, n), FP), 'truncated', `cut at ${n}/${bytes.length}`);
    }),
    { numRuns: 400 },
  );
});

t.test('1–3 bit flips anywhere: magic, version or checksum, by where they fall', async (t) => {
  fc.assert(
    fc.property(arbEntry, fc.uniqueArray(fc.nat(), { minLength: 1, maxLength: 3 }), (e, positions) => {
      const bytes = encodeEntry(e);
      const bits = [...new Set(positions.map((p) => p % (8 * bytes.length)))];
      for (const bit of bits) bytes[bit >> 3]! ^= 1 << (bit & 7);
      const first = Math.min(...bits) >> 3;
      const lowest = bits.filter((b) => b >> 3 < 8).length ? 'magic' : bits.some((b) => b >> 3 < 10) ? 'version' : 'checksum';
      expectReject(t, decodeEntry(bytes, FP), lowest, `flip at byte ${first}`);
    }),
    { numRuns: 500 },
  );
});

t.test('foreign inputs', async (t) => {
  const e = fc.sample(arbEntry, { numRuns: 1, seed: 1 })[0]!;
  const good = encodeEntry(e);
  expectReject(t, decodeEntry(good, OTHER_FP), 'fingerprint', 'another model');
  expectReject(t, decodeEntry(encodeEntry({ ...e, fingerprint: OTHER_FP }), FP), 'fingerprint', 'written by another model');
  const wrongMagic = good.slice();
  wrongMagic.set(new TextEncoder().encode('GGUF'), 0);
  expectReject(t, decodeEntry(wrongMagic, FP), 'magic', 'another file type');
  const v2 = good.slice();
  new DataView(v2.buffer).setUint16(8, 2, true);
  expectReject(t, decodeEntry(resign(v2), FP), 'version', 'a newer format');
  const trailing = new Uint8Array(good.length + 3);
  trailing.set(good);
  expectReject(t, decodeEntry(trailing, FP), 'malformed', 'bytes after the entry');
  const reserved = good.slice();
  reserved[13] = 1;
  expectReject(t, decodeEntry(resign(reserved), FP), 'malformed', 'reserved byte set');
  const badKind = good.slice();
  badKind[10] = 9;
  expectReject(t, decodeEntry(resign(badKind), FP), 'malformed', 'unknown kind');
  const f32of16 = good.slice();
  f32of16[11] = 1;
  f32of16[12] = 2;
  expectReject(t, decodeEntry(resign(f32of16), FP), 'malformed', 'float32 payload for a float16 cache');
  expectReject(t, decodeEntry(new Uint8Array(0), FP), 'truncated', 'empty');
});

t.test('forged lengths: rejected without allocating what they claim', async (t) => {
  const e = fc.sample(arbEntry, { numRuns: 1, seed: 2 })[0]!;
  const good = encodeEntry(e);
  const before = process.memoryUsage().arrayBuffers;
  fc.assert(
    fc.property(
      fc.record({
        layers: fc.nat(),
        kvHeads: fc.nat(),
        headDim: fc.nat(),
        tokens: fc.nat(),
        key: fc.nat(),
        salt: fc.nat(),
        payLo: fc.nat(),
        payHi: fc.nat(),
        codec: fc.nat(4),
      }),
      (f) => {
        const bytes = good.slice();
        const v = new DataView(bytes.buffer);
        for (const [i, n] of [f.layers, f.kvHeads, f.headDim, f.tokens, f.key, f.salt, f.payLo, f.payHi].entries()) v.setUint32(16 + 4 * i, n, true);
        bytes[11] = f.codec;
        const r = decodeEntry(resign(bytes), FP);
        if (!isRejected(r)) return; // the same lengths as before can still decode
        expectReject(t, r, ['truncated', 'malformed', 'checksum'], 'forged lengths');
      },
    ),
    { numRuns: 2000 },
  );
  // A header claiming 16M tokens of int8 must not have allocated them.
  const big = good.slice();
  const v = new DataView(big.buffer);
  v.setUint32(16, 64, true);
  v.setUint32(20, 64, true);
  v.setUint32(24, 128, true);
  v.setUint32(28, 2 ** 24, true);
  v.setUint32(40, payloadBytes('int8', { layers: 64, kvHeads: 64, headDim: 128, tokens: 2 ** 24 }) % 2 ** 32, true);
  v.setUint32(44, Math.floor(payloadBytes('int8', { layers: 64, kvHeads: 64, headDim: 128, tokens: 2 ** 24 }) / 2 ** 32), true);
  big[11] = 3;
  expectReject(t, decodeEntry(resign(big), FP), 'truncated', 'a 16M-token claim on a small input');
  t.ok(process.memoryUsage().arrayBuffers - before < 64 << 20, 'array-buffer memory did not grow by what forged lengths claimed');
});

t.test('random bytes behind a valid magic and version: rejected, never thrown', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (tail, signHeader) => {
      const bytes = new Uint8Array(10 + tail.length);
      bytes.set([0x89, 0x4b, 0x56, 0x53, 0x45, 0x0d, 0x0a, 0x1a, 1, 0]);
      bytes.set(tail, 10);
      if (signHeader && bytes.length >= 96) new DataView(bytes.buffer).setUint32(92, crc32(bytes.subarray(0, 92)), true);
      const r = decodeEntry(bytes, FP);
      if (!isRejected(r)) throw new Error('random bytes accepted');
    }),
    { numRuns: 2000 },
  );
  t.pass('no exception');
});

t.test('encode refuses a caller bug', async (t) => {
  const e = fc.sample(arbEntry, { numRuns: 1, seed: 3 })[0]!;
  t.throws(() => encodeEntry({ ...e, payload: new Uint8Array(1) }), RangeError);
  t.throws(() => encodeEntry({ ...e, tokens: new Int32Array(e.dims.tokens + 1) }), RangeError);
  t.throws(() => encodeEntry({ ...e, key: '' }), RangeError);
  t.throws(() => encodeEntry({ ...e, createdMs: NaN }), RangeError);
  t.throws(() => encodeEntry({ ...e, fingerprint: new Uint8Array(31) }), RangeError);
  t.throws(() => encodeEntry({ ...e, dims: { ...e.dims, layers: 0 } }), RangeError);
});
