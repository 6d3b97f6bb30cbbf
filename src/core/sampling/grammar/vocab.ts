// What each token id writes, as bytes, for any Hugging Face tokenizer.json, plus a trie of those
// byte strings laid out flat in preorder so a grammar can walk it depth-first and skip whole
// subtrees the moment a prefix is rejected. Built once per tokenizer, shared by every grammar.
import { Tokenizer } from '@huggingface/tokenizers';

export interface TokenVocab {
  /** Ids 0..size-1 (the tokenizer's; the model's logits may be longer: the extra ids are never allowed). */
  readonly size: number;
  /** Bytes each id adds to the output, or null for ids that never may be sampled under a grammar (special tokens, empty tokens). */
  readonly bytes: readonly (Uint8Array | null)[];
  readonly eosIds: readonly number[];
  readonly trie: TokenTrie;
}

/**
 * Node 0 is the root (empty prefix). Node i > 0 adds `byte[i]` to its parent's prefix at
 * `depth[i]`; its subtree is i+1 .. end[i]-1, so a rejected prefix is skipped with i = end[i].
 * Ids whose bytes equal node i's prefix are ids[idStart[i] .. idStart[i+1]-1].
 */
export interface TokenTrie {
  readonly nodes: number;
  readonly byte: Uint8Array;
  readonly depth: Uint16Array;
  readonly end: Int32Array;
  readonly idStart: Int32Array;
  readonly ids: Int32Array;
  readonly maxDepth: number;
}

const utf8 = new TextEncoder();

/** GPT-2's byte-to-unicode table, inverted: the printable stand-in character of each byte back to the byte. */
function byteLevelDecoder(): Map<string, number> {
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    map.set(String.fromCodePoint(printable ? b : 256 + extra++), b);
  }
  return map;
}

type DecoderJson = { type?: string; decoders?: DecoderJson[]; pattern?: { String?: string }; content?: string; replacement?: string };

function flattenDecoders(d: DecoderJson | null | undefined): DecoderJson[] {
  if (d == null) return [];
  return d.type === 'Sequence' ? (d.decoders ?? []).flatMap(flattenDecoders) : [d];
}

/**
 * A function from a token's vocabulary string to its bytes, read off the tokenizer's decoder:
 * ByteLevel (GPT-2 style) maps characters back to bytes; SentencePiece-style decoders (Replace
 * "▁" with " ", Metaspace, ByteFallback "<0xNN>") are applied per token. A decoder's Strip of
 * the text's first space is left out: the engine decodes output after prompt context, where that
 * space is real.
 */
function tokenToBytes(decoder: DecoderJson | null | undefined): (token: string) => Uint8Array | null {
  const steps = flattenDecoders(decoder);
  const known = new Set(['ByteLevel', 'Replace', 'Metaspace', 'ByteFallback', 'Fuse', 'Strip']);
  const unknown = steps.map((s) => s.type ?? '?').filter((t) => !known.has(t));
  if (unknown.length > 0) throw new Error(`unsupported tokenizer decoder for constrained decoding: ${unknown.join(', ')}`);
  if (steps.some((s) => s.type === 'ByteLevel')) {
    const table = byteLevelDecoder();
    return (token) => {
      const out = new Uint8Array(token.length);
      let n = 0;
      for (const ch of token) {
        const b = table.get(ch);
        if (b === undefined) return null; // not a byte-level token: never emitted by this model's BPE
        out[n++] = b;
      }
      return out.subarray(0, n);
    };
  }
  const byteFallback = steps.some((s) => s.type === 'ByteFallback');
  const replaces: [string, string][] = [];
  for (const s of steps) {
    if (s.type === 'Replace' && typeof s.pattern?.String === 'string') replaces.push([s.pattern.String, s.content ?? '']);
    if (s.type === 'Metaspace') replaces.push([s.replacement ?? '▁', ' ']);
  }
  return (token) => {
    const m = byteFallback ? /^<0x([0-9A-Fa-f]{2})>$/.exec(token) : null;
    if (m) return Uint8Array.of(parseInt(m[1]!, 16));
    let text = token;
    for (const [from, to] of replaces) text = text.split(from).join(to);
    return utf8.encode(text);
  };
}

/**
 * Builds the vocabulary from a tokenizer.json (the object, as the engine loads it) and the
 * model's EOS ids. Special added tokens other than EOS are never allowed under a grammar.
 */
export function tokenVocab(tokenizerJson: object, eosIds: readonly number[]): TokenVocab {
  const tok = new Tokenizer(tokenizerJson, {});
  const toBytes = tokenToBytes((tokenizerJson as { decoder?: DecoderJson }).decoder);
  // Added tokens are written as their plain text, never through the model's byte mapping.
  const added = new Map<number, Uint8Array | null>();
  for (const [id, t] of tok.get_added_tokens_decoder()) added.set(id, t.special ? null : utf8.encode(t.content));
  const bytes: (Uint8Array | null)[] = [];
  for (const [token, id] of tok.get_vocab(true) as Iterable<[string | undefined, number]>) {
    if (token === undefined) continue;
    const b = added.has(id) ? added.get(id)! : toBytes(token);
    bytes[id] = b !== null && b.length > 0 ? b : null;
  }
  for (let i = 0; i < bytes.length; i++) bytes[i] ??= null;
  return { size: bytes.length, bytes, eosIds: [...eosIds], trie: buildTrie(bytes) };
}

/** Sorts ids by their bytes and lays the trie out in preorder straight from that order. */
export function buildTrie(bytes: readonly (Uint8Array | null)[]): TokenTrie {
  const order: number[] = [];
  for (let id = 0; id < bytes.length; id++) if (bytes[id] != null) order.push(id);
  order.sort((x, y) => compareBytes(bytes[x]!, bytes[y]!) || x - y);

  const byte: number[] = [0];
  const depth: number[] = [0];
  const nodeOf = new Int32Array(order.length); // the trie node each sorted token ends at
  // The path of trie nodes for the previous token's bytes: consecutive sorted tokens share a prefix.
  const path: number[] = [0];
  let prev: Uint8Array = new Uint8Array(0);
  let maxDepth = 0;
  order.forEach((id, k) => {
    const b = bytes[id]!;
    let common = 0;
    while (common < b.length && common < prev.length && b[common] === prev[common]) common++;
    path.length = common + 1;
    for (let d = common; d < b.length; d++) {
      path.push(byte.length);
      byte.push(b[d]!);
      depth.push(d + 1);
    }
    nodeOf[k] = path[b.length]!;
    prev = b;
    maxDepth = Math.max(maxDepth, b.length);
  });

  const n = byte.length;
  const end = new Int32Array(n);
  const stack: number[] = [];
  for (let i = 0; i < n; i++) {
    while (stack.length > 0 && depth[stack[stack.length - 1]!]! >= depth[i]!) end[stack.pop()!] = i;
    stack.push(i);
  }
  for (const i of stack) end[i] = n;
  // Tokens in sorted order already sit in preorder of their nodes: ids[] is order itself.
  const idStart = new Int32Array(n + 1);
  for (const node of nodeOf) idStart[node + 1]!++;
  for (let i = 0; i < n; i++) idStart[i + 1]! += idStart[i]!;
  return {
    nodes: n,
    byte: Uint8Array.from(byte),
    depth: Uint16Array.from(depth),
    end,
    idStart,
    ids: Int32Array.from(order),
    maxDepth,
  };
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}
