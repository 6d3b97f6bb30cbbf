// CRC-32 (the zlib/IEEE polynomial) of entry bytes. zlib.crc32 is native and SIMD-accelerated
// (several GiB/s; bench/tiers-throughput.ts measures it against sha256 and a JS CRC32C), so a
// checksum never makes encoding the bottleneck. Node 20 before 20.15 lacks it: a slice-by-8
// JS implementation of the same polynomial stands in, so entries read the same either way.
import * as zlib from 'node:zlib';

type Crc = (data: Uint8Array, value?: number) => number;

const native = (zlib as unknown as { crc32?: Crc }).crc32;

let tables: Uint32Array[] | undefined;

function crcTables(): Uint32Array[] {
  if (tables) return tables;
  const t0 = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
    t0[i] = c >>> 0;
  }
  tables = [t0];
  for (let j = 1; j < 8; j++) {
    const prev = tables[j - 1]!;
    const t = new Uint32Array(256);
    for (let i = 0; i < 256; i++) t[i] = (prev[i]! >>> 8) ^ t0[prev[i]! & 0xff]!;
    tables.push(t);
  }
  return tables;
}

/** The JS fallback, exported so tests can hold it to the native one. */
export function crc32Js(data: Uint8Array, value = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = crcTables() as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = data.length;
  let c = ~value;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const lo = (view.getUint32(i, true) ^ c) >>> 0;
    const hi = view.getUint32(i + 4, true);
    c =
      t7[lo & 0xff]! ^
      t6[(lo >>> 8) & 0xff]! ^
      t5[(lo >>> 16) & 0xff]! ^
      t4[lo >>> 24]! ^
      t3[hi & 0xff]! ^
      t2[(hi >>> 8) & 0xff]! ^
      t1[(hi >>> 16) & 0xff]! ^
      t0[hi >>> 24]!;
  }
  for (; i < n; i++) c = t0[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC-32 of `data`, continuing from `value` (the CRC of what came before). */
export function crc32(data: Uint8Array, value = 0): number {
  // zlib answers 0 for an empty array with no backing store, whatever `value` is.
  if (data.length === 0) return value >>> 0;
  return native ? native(data, value) >>> 0 : crc32Js(data, value);
}
