/**
 * Test helper: rewrite an ONNX model into the "external data" layout that
 * onnxruntime-genai's model builder and Optimum emit for big models, so the
 * test suite can check that kvserve loads that layout exactly like a
 * self-contained .onnx file.
 *
 * It works on the protobuf wire format directly (no onnx/protobuf package):
 * only the messages on the path to a large initializer are decoded and
 * re-encoded; every other field is copied byte-for-byte.
 *
 *   ModelProto
 *   ├─ field 7  graph: GraphProto (len-delimited)       ← re-encoded
 *   │   ├─ field 5  initializer: TensorProto (repeated)  ← re-encoded if big
 *   │   │   ├─ field 9   raw_data (bytes)                → moved to <name>.data
 *   │   │   ├─ field 13  external_data (repeated)        ← appended:
 *   │   │   │     StringStringEntryProto { 1: key, 2: value }
 *   │   │   │     location=<name>.data, offset=<n>, length=<n>
 *   │   │   ├─ field 14  data_location (enum)             ← set to EXTERNAL (1)
 *   │   │   └─ any other field                            copied as-is
 *   │   └─ any other field                                copied as-is
 *   └─ any other field                                    copied as-is
 *
 *   A field on the wire:  tag = varint(field << 3 | wireType), then
 *     wireType 0 varint | 1 fixed64 | 2 varint length + bytes | 5 fixed32
 */
import { open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

const WT_VARINT = 0;
const WT_I64 = 1;
const WT_LEN = 2;
const WT_I32 = 5;

const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const TENSOR_RAW_DATA = 9;
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_DATA_LOCATION = 14;
const DATA_LOCATION_EXTERNAL = 1;

/** onnxruntime's own external-data writer aligns to the page size; this lets it mmap tensors. */
const ALIGN = 4096;

interface Field {
  field: number;
  wireType: number;
  /** The whole field, tag included: what gets copied when the field is left alone. */
  raw: Uint8Array;
  /** For WT_LEN: the payload bytes. For WT_VARINT: empty. */
  payload: Uint8Array;
  /** For WT_VARINT: the decoded value. int64 fields may be 10-byte varints, hence BigInt. */
  varint: bigint;
}

/**
 * Reads a base-128 varint. BigInt, because JS bitwise operators truncate to 32 bits,
 * which would corrupt lengths/values >= 2^31 (and int64 varints are up to 64 bits).
 */
function readVarint(buf: Uint8Array, pos: number): { value: bigint; end: number } {
  let value = 0n;
  let shift = 0n;
  for (let i = pos; i < buf.length; i++) {
    const byte = buf[i]!;
    value |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return { value, end: i + 1 };
    shift += 7n;
    if (shift > 63n) throw new Error(`varint too long at byte ${pos}`);
  }
  throw new Error(`truncated varint at byte ${pos}`);
}

function encodeVarint(n: number | bigint): Uint8Array {
  let v = BigInt(n);
  if (v < 0n) throw new Error(`negative varint ${v}`);
  const out: number[] = [];
  do {
    const low = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? low | 0x80 : low);
  } while (v > 0n);
  return Uint8Array.from(out);
}

function toSafeNumber(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what} too large: ${v}`);
  return Number(v);
}

/** Splits a message into its top-level fields, keeping each field's exact bytes. */
function parseFields(buf: Uint8Array): Field[] {
  const fields: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    const tag = readVarint(buf, pos);
    pos = tag.end;
    const field = toSafeNumber(tag.value >> 3n, 'field number');
    const wireType = Number(tag.value & 7n);
    let payload: Uint8Array = new Uint8Array(0);
    let varint = 0n;
    switch (wireType) {
      case WT_VARINT: {
        const v = readVarint(buf, pos);
        varint = v.value;
        pos = v.end;
        break;
      }
      case WT_I64:
        pos += 8;
        break;
      case WT_I32:
        pos += 4;
        break;
      case WT_LEN: {
        const len = readVarint(buf, pos);
        const end = len.end + toSafeNumber(len.value, 'field length');
        payload = buf.subarray(len.end, end);
        pos = end;
        break;
      }
      default:
        // Groups (3/4) are proto2-only and never appear in ONNX.
        throw new Error(`unsupported wire type ${wireType} for field ${field} at byte ${start}`);
    }
    if (pos > buf.length) throw new Error(`field ${field} at byte ${start} runs past end of message`);
    fields.push({ field, wireType, raw: buf.subarray(start, pos), payload, varint });
  }
  return fields;
}

function tag(field: number, wireType: number): Uint8Array {
  return encodeVarint(field * 8 + wireType); // not `<<`: field numbers go up to 2^29
}

function lenField(field: number, payload: Uint8Array): Uint8Array {
  return concat([tag(field, WT_LEN), encodeVarint(payload.length), payload]);
}

function varintField(field: number, value: number): Uint8Array {
  return concat([tag(field, WT_VARINT), encodeVarint(value)]);
}

function stringEntry(key: string, value: string): Uint8Array {
  const enc = new TextEncoder();
  return lenField(TENSOR_EXTERNAL_DATA, concat([lenField(1, enc.encode(key)), lenField(2, enc.encode(value))]));
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

/** Where the next tensor goes in the .data file; owns the file handle. */
interface DataSink {
  location: string;
  /** Appends bytes at the next aligned offset and returns that offset. */
  append(bytes: Uint8Array): Promise<number>;
}

/** Returns the tensor re-encoded with its raw_data moved to the sink, or its original bytes. */
async function rewriteTensor(tensor: Uint8Array, sink: DataSink, minBytes: number): Promise<Uint8Array> {
  const fields = parseFields(tensor);
  const rawData = fields.find((f) => f.field === TENSOR_RAW_DATA && f.wireType === WT_LEN);
  // Typed fields (float_data, int64_data, ...) and small tensors stay inline: ORT only
  // reads external data in place of raw_data, and tiny constants are not worth a seek.
  if (!rawData || rawData.payload.length < minBytes) return tensor;

  const offset = await sink.append(rawData.payload);
  const kept = fields.filter((f) => f.field !== TENSOR_RAW_DATA && f.field !== TENSOR_DATA_LOCATION).map((f) => f.raw);
  return concat([
    ...kept,
    stringEntry('location', sink.location),
    stringEntry('offset', String(offset)),
    stringEntry('length', String(rawData.payload.length)),
    varintField(TENSOR_DATA_LOCATION, DATA_LOCATION_EXTERNAL),
  ]);
}

async function rewriteGraph(graph: Uint8Array, sink: DataSink, minBytes: number): Promise<Uint8Array> {
  const out: Uint8Array[] = [];
  for (const f of parseFields(graph)) {
    if (f.field === GRAPH_INITIALIZER && f.wireType === WT_LEN) {
      const tensor = await rewriteTensor(f.payload, sink, minBytes);
      // Unchanged tensors keep their original encoding, length prefix and all.
      out.push(tensor === f.payload ? f.raw : lenField(GRAPH_INITIALIZER, tensor));
    } else {
      out.push(f.raw);
    }
  }
  return concat(out);
}

/** Rewrites an ONNX model so that every large initializer's bytes live in an external file beside it
 *  (the layout onnxruntime-genai's model builder and Optimum use for big models):
 *  writes `<dstDir>/<name>` (graph only) and `<dstDir>/<name>.data` (raw tensor bytes). Returns both paths. */
export async function externalizeOnnx(srcPath: string, dstDir: string, name = 'model.onnx', minBytes = 1024): Promise<{ modelPath: string; dataPath: string }> {
  const modelPath = path.join(dstDir, name);
  const dataPath = `${modelPath}.data`;
  const src = new Uint8Array(await readFile(srcPath));

  const fh = await open(dataPath, 'w');
  try {
    let end = 0; // bytes written so far; offsets are plain numbers (exact up to 2^53)
    const sink: DataSink = {
      // ORT resolves `location` relative to the model's directory, so store the bare file name.
      location: path.basename(dataPath),
      async append(bytes) {
        const offset = Math.ceil(end / ALIGN) * ALIGN; // the gap is left as a zero-filled hole
        let written = 0;
        while (written < bytes.length) {
          const r = await fh.write(bytes, written, bytes.length - written, offset + written);
          written += r.bytesWritten;
        }
        end = offset + bytes.length;
        return offset;
      },
    };

    const out: Uint8Array[] = [];
    for (const f of parseFields(src)) {
      if (f.field === MODEL_GRAPH && f.wireType === WT_LEN) {
        out.push(lenField(MODEL_GRAPH, await rewriteGraph(f.payload, sink, minBytes)));
      } else {
        out.push(f.raw);
      }
    }
    await writeFile(modelPath, concat(out));
  } finally {
    await fh.close();
  }
  return { modelPath, dataPath };
}
