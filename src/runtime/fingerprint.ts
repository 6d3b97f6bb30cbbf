// The model fingerprint every entry carries: SHA-256 over all the bytes that decide what a K/V
// value means — the ONNX graph and its external weights, tokenizer.json, the KV layout and
// dtype. Full hashes, not samples: two fine-tunes can differ in a few tensors only, and a
// cache from one must never serve the other. Streaming keeps memory flat for large models.
import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { FINGERPRINT_BYTES } from '../core/kv/entry/format.js';
import type { KvLayout } from '../core/kv/layout.js';
import { externalDataLocations } from './onnx/file-scan.js';

export interface FingerprintInput {
  onnxPath: string;
  tokenizerPath: string;
  layout: KvLayout;
}

const CHUNK = 4 << 20;

/** Feeds a file into the hash, preceded by a label and its length so parts never run together. */
async function hashFile(hash: Hash, label: string, path: string, buf: Buffer): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    hash.update(`${label}\u0000${size}\u0000`);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - done), done);
      if (bytesRead === 0) throw new Error(`${path} shrank while it was hashed`);
      hash.update(buf.subarray(0, bytesRead));
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/** The files a fingerprint reads: the graph, then its external data files (sorted), then the tokenizer. */
export function fingerprintFiles(input: Omit<FingerprintInput, 'layout'>): { label: string; path: string }[] {
  const dir = dirname(input.onnxPath);
  return [
    { label: 'onnx', path: input.onnxPath },
    ...externalDataLocations(input.onnxPath).map((loc) => ({ label: `onnx-data:${loc}`, path: resolve(dir, loc) })),
    { label: 'tokenizer.json', path: input.tokenizerPath },
  ];
}

/** 32 bytes; throws if a file is missing or unreadable (the model could not load either). */
export async function modelFingerprint(input: FingerprintInput): Promise<Uint8Array> {
  const hash = createHash('sha256').update('kvserve-model-fingerprint/1\u0000');
  const buf = Buffer.allocUnsafe(CHUNK);
  for (const { label, path } of fingerprintFiles(input)) {
    await hashFile(hash, label, path, buf);
  }
  const { layers, kvHeads, headDim, dtype } = input.layout;
  hash.update(`kv-layout\u0000${JSON.stringify({ layers, kvHeads, headDim, dtype })}`);
  const out = new Uint8Array(hash.digest());
  if (out.length !== FINGERPRINT_BYTES) throw new Error('fingerprint size mismatch');
  return out;
}

export const fingerprintHex = (fp: Uint8Array): string => Buffer.from(fp).toString('hex');
