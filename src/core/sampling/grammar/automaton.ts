// The byte-level pushdown automaton: a state is an immutable stack of frames (one per open JSON
// value) and step() consumes one byte of UTF-8 output, returning the next state or null. Frames
// are never mutated, so a state is shared freely between sequences, clones and the mask walk.
import { ARRAY, LITERAL, NUMBER, OBJECT, ROOT, STRING, UNION, type Node, type ObjectNode } from './nodes.js';

export class Frame {
  /** Memo key of the whole stack, built on first use. */
  key: string | undefined = undefined;
  /** Fewest bytes that finish the document from here (this frame and all below), or -1 until asked. */
  total = -1;
  /** s: the node's local state; a, b: its counters (which depend on the node kind and s). */
  constructor(
    readonly n: Node,
    readonly s: number,
    readonly a: number,
    readonly b: number,
    readonly up: Frame | null,
  ) {}
}

// String states. UTF-8 states check the bytes RFC 3629 allows after E0, ED, F0 and F4 leads.
const S_IN = 0,
  S_ESC = 1,
  S_HEX = 2,
  S_UTF = 3,
  S_E0 = 4,
  S_ED = 5,
  S_F0 = 6,
  S_F4 = 7;
// Number states; a counts the digits of the current part.
const N_START = 0,
  N_MINUS = 1,
  N_ZERO = 2,
  N_INT = 3,
  N_DOT = 4,
  N_FRAC = 5,
  N_E = 6,
  N_ESIGN = 7,
  N_EXP = 8;
// Object states. a: next property index (or, after a key, the key's index); b: whitespace run
// length, or in O_KEY the position in the key trie.
const O_OPEN = 0,
  O_KEY = 1,
  O_AFTER_KEY = 2,
  O_AFTER_COLON = 3,
  O_AFTER_VALUE = 4,
  O_AFTER_COMMA = 5;
// Array states. a: items so far (saturating once it no longer matters); b: whitespace run length.
const A_OPEN = 0,
  A_AFTER_VALUE = 1,
  A_AFTER_COMMA = 2;

/** Digits allowed per number part: 15 keeps integers exact in a double; exponents stay finite. */
const MAX_INT_DIGITS = 15,
  MAX_FRAC_DIGITS = 15,
  MAX_EXP_DIGITS = 2;

const isWs = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d;
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isHex = (c: number): boolean => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
const numberAccepts = (s: number): boolean => s === N_ZERO || s === N_INT || s === N_FRAC || s === N_EXP;

export function initialFrame(root: Node): Frame {
  return new Frame(root, 0, 0, 0, null);
}

/** The state after byte c, or null if c cannot come next. */
export function step(f: Frame, c: number): Frame | null {
  const n = f.n;
  switch (n.k) {
    case STRING:
      return stepString(f, c);
    case NUMBER:
      return stepNumber(f, c, n.int);
    case LITERAL: {
      const nx = n.trie.next[f.s]!.get(c);
      if (nx !== undefined) return n.trie.value[nx]! >= 0 && n.trie.isLeaf(nx) ? f.up : new Frame(n, nx, 0, 0, f.up);
      return n.trie.value[f.s]! >= 0 ? step(f.up!, c) : null; // a literal that may end here, e.g. 1 of [1, 12]
    }
    case OBJECT:
      return stepObject(f, n, c);
    case ARRAY:
      if (isWs(c)) return ws(f, n.ws);
      if (f.s === A_AFTER_VALUE) {
        if (c === 0x2c) return f.a < n.max ? new Frame(n, A_AFTER_COMMA, f.a, 0, f.up) : null;
        return c === 0x5d && f.a >= n.min ? f.up : null;
      }
      if (f.s === A_OPEN && c === 0x5d) return n.min === 0 ? f.up : null;
      if (f.s === A_OPEN && n.max === 0) return null;
      // The count saturates at max(min, max), or at min when max is unbounded: past that it no
      // longer changes what may follow, and the states (memo keys) stay few.
      return startValue(n.items, c, new Frame(n, A_AFTER_VALUE, Math.min(f.a + 1, Math.max(n.min, Number.isFinite(n.max) ? n.max : 0)), 0, f.up));
    case ROOT:
      if (f.s === 1) return null; // the document is complete: nothing, not even whitespace, follows
      if (isWs(c)) return ws(f, n.ws);
      return startValue(n.value, c, new Frame(n, 1, 0, 0, null));
    case UNION:
      return null; // unions only dispatch in startValue(); no frame holds one
  }
}

function ws(f: Frame, max: number): Frame | null {
  return f.b < max ? new Frame(f.n, f.s, f.a, f.b + 1, f.up) : null;
}

/** Opens a value of `node` with its first byte c; `after` is the parent's state once it closes. */
function startValue(node: Node, c: number, after: Frame): Frame | null {
  switch (node.k) {
    case UNION: {
      const i = node.first[c]!;
      return i < 0 ? null : startValue(node.alts[i]!, c, after);
    }
    case OBJECT:
      return c === 0x7b ? new Frame(node, O_OPEN, 0, 0, after) : null;
    case ARRAY:
      return c === 0x5b ? new Frame(node, A_OPEN, 0, 0, after) : null;
    case STRING:
      return c === 0x22 ? new Frame(node, S_IN, 0, 0, after) : null;
    case NUMBER:
    case LITERAL:
      return step(new Frame(node, N_START, 0, 0, after), c);
    case ROOT:
      return null;
  }
}

function stepString(f: Frame, c: number): Frame | null {
  const { n, up } = f;
  switch (f.s) {
    case S_IN:
      if (c === 0x22) return up;
      if (c === 0x5c) return new Frame(n, S_ESC, 0, 0, up);
      if (c < 0x20) return null; // control characters must be escaped
      if (c < 0x80) return f;
      if (c >= 0xc2 && c <= 0xdf) return new Frame(n, S_UTF, 1, 0, up);
      if (c === 0xe0) return new Frame(n, S_E0, 0, 0, up);
      if (c === 0xed) return new Frame(n, S_ED, 0, 0, up);
      if (c >= 0xe1 && c <= 0xef) return new Frame(n, S_UTF, 2, 0, up);
      if (c === 0xf0) return new Frame(n, S_F0, 0, 0, up);
      if (c >= 0xf1 && c <= 0xf3) return new Frame(n, S_UTF, 3, 0, up);
      if (c === 0xf4) return new Frame(n, S_F4, 0, 0, up);
      return null;
    case S_ESC:
      if (c === 0x75) return new Frame(n, S_HEX, 4, 0, up);
      // " \ / b f n r t
      return c === 0x22 || c === 0x5c || c === 0x2f || c === 0x62 || c === 0x66 || c === 0x6e || c === 0x72 || c === 0x74 ? new Frame(n, S_IN, 0, 0, up) : null;
    case S_HEX:
      if (!isHex(c)) return null;
      return new Frame(n, f.a === 1 ? S_IN : S_HEX, f.a - 1, 0, up);
    case S_UTF:
      if (c < 0x80 || c > 0xbf) return null;
      return new Frame(n, f.a === 1 ? S_IN : S_UTF, f.a - 1, 0, up);
    case S_E0:
      return c >= 0xa0 && c <= 0xbf ? new Frame(n, S_UTF, 1, 0, up) : null;
    case S_ED:
      return c >= 0x80 && c <= 0x9f ? new Frame(n, S_UTF, 1, 0, up) : null;
    case S_F0:
      return c >= 0x90 && c <= 0xbf ? new Frame(n, S_UTF, 2, 0, up) : null;
    default: // S_F4
      return c >= 0x80 && c <= 0x8f ? new Frame(n, S_UTF, 2, 0, up) : null;
  }
}

// Hot paths define no inner closures: tsx (tests, benches) wraps each one in a __name() call
// per invocation, which made a 256-node trie walk cost ~300 µs.
function numberFrame(f: Frame, state: number, digits: number): Frame {
  return new Frame(f.n, state, digits, 0, f.up);
}

function stepNumber(f: Frame, c: number, int: boolean): Frame | null {
  const { s, a } = f;
  const digit = isDigit(c);
  switch (s) {
    case N_START:
    case N_MINUS:
      if (s === N_START && c === 0x2d) return numberFrame(f, N_MINUS, 0);
      return c === 0x30 ? numberFrame(f, N_ZERO, 1) : digit ? numberFrame(f, N_INT, 1) : null;
    case N_DOT:
      return digit ? numberFrame(f, N_FRAC, 1) : null;
    case N_E:
      if (c === 0x2b || c === 0x2d) return numberFrame(f, N_ESIGN, 0);
      return digit ? numberFrame(f, N_EXP, 1) : null;
    case N_ESIGN:
      return digit ? numberFrame(f, N_EXP, 1) : null;
  }
  // An accepting state: the number goes on, or it ended and c belongs to the enclosing value.
  if (digit && s === N_INT && a < MAX_INT_DIGITS) return numberFrame(f, N_INT, a + 1);
  if (digit && s === N_FRAC && a < MAX_FRAC_DIGITS) return numberFrame(f, N_FRAC, a + 1);
  if (digit && s === N_EXP && a < MAX_EXP_DIGITS) return numberFrame(f, N_EXP, a + 1);
  if (!int && c === 0x2e && (s === N_ZERO || s === N_INT)) return numberFrame(f, N_DOT, 0);
  if (!int && (c === 0x65 || c === 0x45) && s !== N_EXP) return numberFrame(f, N_E, 0);
  return digit ? null : step(f.up!, c);
}

function stepObject(f: Frame, n: ObjectNode, c: number): Frame | null {
  const { s, a, up } = f;
  const free = n.extra !== null;
  if (s === O_KEY) {
    const trie = n.keys[a]!;
    const nx = trie.next[f.b]!.get(c);
    if (nx === undefined) return null;
    const j = trie.value[nx]!;
    return j >= 0 ? new Frame(n, O_AFTER_KEY, j, 0, up) : new Frame(n, O_KEY, a, nx, up);
  }
  if (isWs(c)) return ws(f, n.ws);
  switch (s) {
    case O_OPEN:
    case O_AFTER_COMMA:
      if (s === O_OPEN && c === 0x7d) return free || n.nextReq[0] === n.props.length ? up : null;
      if (c !== 0x22) return null;
      if (free) return new Frame(KEY, S_IN, 0, 0, new Frame(n, O_AFTER_KEY, 0, 0, up));
      return n.keys[a]!.empty ? null : step(new Frame(n, O_KEY, a, 0, up), c);
    case O_AFTER_KEY:
      return c === 0x3a ? new Frame(n, O_AFTER_COLON, a, 0, up) : null;
    case O_AFTER_COLON:
      return free ? startValue(n.extra!, c, new Frame(n, O_AFTER_VALUE, 0, 0, up)) : startValue(n.props[a]!.node, c, new Frame(n, O_AFTER_VALUE, a + 1, 0, up));
    case O_AFTER_VALUE:
      if (c === 0x2c) return free || a < n.props.length ? new Frame(n, O_AFTER_COMMA, a, 0, up) : null;
      return c === 0x7d && (free || n.nextReq[a] === n.props.length) ? up : null;
  }
  return null;
}

/** The node free-form keys are read with: any JSON string. */
export const KEY: Node = { k: STRING, id: -1, minLen: 2 };

/** True inside a string's body (not mid-escape, not mid-character): where most tokens are allowed. */
export function inStringBody(f: Frame): boolean {
  return f.n.k === STRING && f.s === S_IN;
}

/**
 * A string body whose closing quote lands on `exit`: stepping a token from `start` tells, for
 * every string of every schema alike, whether it stays inside, closes the string, or is invalid.
 */
export function stringProbe(): { start: Frame; exit: Frame } {
  const exit = new Frame({ k: ROOT, id: -2, minLen: 0, value: KEY, ws: 0 }, 1, 0, 0, null);
  return { start: new Frame(KEY, S_IN, 0, 0, exit), exit };
}

/** True if the document may end here (EOS allowed). */
export function canEnd(f: Frame | null): boolean {
  while (f !== null) {
    const { n } = f;
    if (n.k === ROOT) return f.s === 1;
    const open = (n.k === NUMBER && numberAccepts(f.s)) || (n.k === LITERAL && n.trie.value[f.s]! >= 0);
    if (!open) return false;
    f = f.up;
  }
  return false;
}

/** True once the root value is closed: nothing but EOS may follow. */
export function isComplete(f: Frame): boolean {
  return f.n.k === ROOT && f.s === 1;
}

export function stateKey(f: Frame): string {
  f.key ??= `${f.up === null ? '' : stateKey(f.up)}/${f.n.id}.${f.s}.${f.a}.${f.b}`;
  return f.key;
}

/** Fewest bytes that finish the document from this state. */
export function remaining(f: Frame): number {
  if (f.total < 0) f.total = localCost(f) + (f.up === null ? 0 : remaining(f.up));
  return f.total;
}

function localCost(f: Frame): number {
  const { n, s, a } = f;
  switch (n.k) {
    case ROOT:
      return s === 0 ? n.value.minLen : 0;
    case STRING:
      return s === S_IN ? 1 : s === S_ESC ? 2 : s === S_HEX || s === S_UTF ? a + 1 : s === S_E0 || s === S_ED ? 3 : 4;
    case NUMBER:
      return numberAccepts(s) ? 0 : 1;
    case LITERAL:
      return n.trie.cost[s]!;
    case ARRAY: {
      const m = n.items.minLen;
      if (s === A_OPEN) return n.min === 0 ? 1 : n.min * m + n.min;
      const left = Math.max(0, n.min - a - (s === A_AFTER_COMMA ? 1 : 0));
      return (s === A_AFTER_COMMA ? m : 0) + left * (1 + m) + 1;
    }
    case OBJECT:
      return n.extra !== null ? freeObjectCost(s, n.extra.minLen) : declaredObjectCost(n, s, a, f.b);
    case UNION:
      return 0;
  }
}

function freeObjectCost(s: number, valueLen: number): number {
  switch (s) {
    case O_OPEN:
    case O_AFTER_VALUE:
      return 1;
    case O_AFTER_COMMA:
      return 2 + 1 + valueLen + 1;
    case O_AFTER_KEY:
      return 1 + valueLen + 1;
    default:
      return valueLen + 1; // O_AFTER_COLON
  }
}

function declaredObjectCost(n: ObjectNode, s: number, a: number, b: number): number {
  switch (s) {
    case O_OPEN:
      return n.nextReq[0] === n.props.length ? 1 : n.rest[0]! - 1; // the first member needs no comma
    case O_KEY:
      return n.keys[a]!.cost[b]!;
    case O_AFTER_KEY:
      return 1 + n.props[a]!.node.minLen + n.rest[a + 1]!;
    case O_AFTER_COLON:
      return n.props[a]!.node.minLen + n.rest[a + 1]!;
    case O_AFTER_VALUE:
      return n.rest[a]!;
    default:
      return n.commaCost[a]!; // O_AFTER_COMMA
  }
}
