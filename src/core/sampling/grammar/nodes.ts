// The compiled form of a JSON schema: a graph of value nodes (cyclic through $ref) that the
// byte automaton walks, and the "fewest bytes to finish" figures every node carries so decoding
// can be steered to close the document within a token budget.
import { LitTrie } from './lit-trie.js';

export const ROOT = 0;
export const OBJECT = 1;
export const ARRAY = 2;
export const STRING = 3;
export const NUMBER = 4;
export const LITERAL = 5;
export const UNION = 6;

interface Base {
  /** Unique within a grammar: part of every state's memo key. */
  id: number;
  /** Bytes of the shortest instance (Infinity while unknown or if there is none). */
  minLen: number;
}

export interface Prop {
  key: string;
  node: Node;
  required: boolean;
  /** Bytes of the key as written, quotes included. */
  keyLen: number;
}

export interface ObjectNode extends Base {
  k: typeof OBJECT;
  /** Declared properties, written in this order; optional ones may be skipped. */
  props: Prop[];
  /** Schema of free-form keys' values, for objects that declare no properties (json_object, maps). */
  extra: Node | null;
  ws: number;
  /** keys[a]: the keys that may come next when props[a..] remain (up to the first required one). */
  keys: LitTrie[];
  /** nextReq[a]: index of the first required property at or after a (props.length if none). */
  nextReq: number[];
  /** rest[a]: fewest bytes to close the object from "after a value" with props[a..] remaining. */
  rest: number[];
  /** commaCost[a]: the same just after a comma (a key must follow). */
  commaCost: number[];
}

export interface ArrayNode extends Base {
  k: typeof ARRAY;
  items: Node;
  min: number;
  max: number;
  ws: number;
}

export interface StringNode extends Base {
  k: typeof STRING;
}

export interface NumberNode extends Base {
  k: typeof NUMBER;
  int: boolean;
}

export interface LiteralNode extends Base {
  k: typeof LITERAL;
  trie: LitTrie;
}

export interface UnionNode extends Base {
  k: typeof UNION;
  alts: Node[];
  /** first[c]: the alternative a value starting with byte c belongs to, or -1. */
  first: Int8Array;
}

export interface RootNode extends Base {
  k: typeof ROOT;
  value: Node;
  ws: number;
}

export type Node = RootNode | ObjectNode | ArrayNode | StringNode | NumberNode | LiteralNode | UnionNode;

/** Bytes of one "," + key + ":" + shortest value. */
const member = (p: Prop): number => 1 + p.keyLen + 1 + p.node.minLen;

function objectMinLen(n: ObjectNode): number {
  let len = 2;
  let count = 0;
  for (const p of n.props) {
    if (!p.required) continue;
    len += member(p);
    count++;
  }
  return count > 0 ? len - 1 : len;
}

function arrayOpenCost(n: ArrayNode): number {
  return n.min === 0 ? 1 : n.min * n.items.minLen + (n.min - 1) + 1;
}

function nodeMinLen(n: Node): number {
  switch (n.k) {
    case ROOT:
      return n.value.minLen;
    case OBJECT:
      return objectMinLen(n);
    case ARRAY:
      return 1 + arrayOpenCost(n);
    case STRING:
      return 2;
    case NUMBER:
      return 1;
    case LITERAL:
      return n.trie.cost[0]!;
    case UNION:
      return Math.min(...n.alts.map((a) => a.minLen));
  }
}

/**
 * Fixes minLen for every node (a fixpoint: $ref cycles make it recursive) and the per-object
 * tables derived from it. Throws if some node has no finite instance.
 */
export function settleCosts(nodes: readonly Node[]): void {
  for (const n of nodes) n.minLen = Infinity;
  for (let changed = true; changed; ) {
    changed = false;
    for (const n of nodes) {
      const len = nodeMinLen(n);
      if (len < n.minLen) {
        n.minLen = len;
        changed = true;
      }
    }
  }
  for (const n of nodes) {
    if (n.minLen === Infinity) throw new Error('the schema admits no finite JSON document');
    if (n.k === OBJECT) objectTables(n);
  }
}

function objectTables(n: ObjectNode): void {
  const { props } = n;
  const len = props.length;
  n.rest = new Array<number>(len + 1);
  n.nextReq = new Array<number>(len + 1);
  n.rest[len] = 1;
  n.nextReq[len] = len;
  for (let a = len - 1; a >= 0; a--) {
    const p = props[a]!;
    n.rest[a] = n.rest[a + 1]! + (p.required ? member(p) : 0);
    n.nextReq[a] = p.required ? a : n.nextReq[a + 1]!;
  }
  const afterKey = (j: number): number => 1 + props[j]!.node.minLen + n.rest[j + 1]!;
  n.keys = [];
  n.commaCost = [];
  for (let a = 0; a <= len; a++) {
    const last = Math.min(n.nextReq[a]!, len - 1);
    const entries: { bytes: Uint8Array; value: number }[] = [];
    for (let j = a; j <= last; j++) entries.push({ bytes: new TextEncoder().encode(JSON.stringify(props[j]!.key)), value: j });
    const trie = new LitTrie(entries);
    trie.weigh(afterKey);
    n.keys.push(trie);
    n.commaCost.push(trie.cost[0]!);
  }
}
