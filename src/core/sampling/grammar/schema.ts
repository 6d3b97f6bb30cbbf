// Compiles a JSON schema (the subset OpenAI's structured outputs use) into the node graph the
// automaton walks. Every keyword is either honoured, ignored as a pure annotation, or rejected by
// name: a constraint silently dropped would let through documents that fail validation.
import { LitTrie } from './lit-trie.js';
import { ARRAY, LITERAL, NUMBER, OBJECT, ROOT, STRING, UNION, settleCosts, type Node, type ObjectNode, type Prop, type RootNode } from './nodes.js';

/** The schema uses keywords this module cannot enforce; `keywords` names them (for a 400). */
export class UnsupportedSchemaError extends Error {
  constructor(
    readonly keywords: string[],
    detail?: string,
  ) {
    super(`unsupported JSON schema keyword${keywords.length > 1 ? 's' : ''}: ${keywords.join(', ')}${detail ? ` (${detail})` : ''}`);
    this.name = 'UnsupportedSchemaError';
  }
}

export interface SchemaOptions {
  /** OpenAI's strict mode: an object without `additionalProperties` allows no keys beyond its own. */
  strict?: boolean;
  /** Longest run of whitespace between two JSON tokens (bounded so a model cannot idle forever). */
  maxWhitespace?: number;
}

const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly']);
const SUPPORTED = new Set([
  'type',
  'properties',
  'required',
  'additionalProperties',
  'enum',
  'const',
  'items',
  'minItems',
  'maxItems',
  'anyOf',
  '$ref',
  '$defs',
  'definitions',
]);
const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);

type Schema = boolean | Record<string, unknown>;
const utf8 = new TextEncoder();

/** Every keyword used anywhere in the schema that is neither supported nor an annotation. */
function unsupportedKeywords(schema: unknown, found = new Set<string>()): Set<string> {
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return found;
  const s = schema as Record<string, unknown>;
  for (const k of Object.keys(s)) if (!SUPPORTED.has(k) && !ANNOTATIONS.has(k)) found.add(k);
  if (Array.isArray(s.items)) found.add('items (array form)');
  const subs: unknown[] = [s.items, s.additionalProperties];
  for (const group of [s.properties, s.$defs, s.definitions]) if (typeof group === 'object' && group !== null) subs.push(...Object.values(group));
  if (Array.isArray(s.anyOf)) subs.push(...(s.anyOf as unknown[]));
  for (const sub of subs) unsupportedKeywords(sub, found);
  return found;
}

export function compileJsonObject(options: SchemaOptions = {}): RootNode {
  const c = new SchemaCompiler(true, options);
  return c.finish({ k: OBJECT, id: 0, minLen: 0, props: [], extra: c.any, ws: c.ws, keys: [], nextReq: [], rest: [], commaCost: [] });
}

export function compileSchema(schema: unknown, options: SchemaOptions = {}): RootNode {
  if (typeof schema !== 'boolean' && (typeof schema !== 'object' || schema === null || Array.isArray(schema))) {
    throw new Error('a JSON schema must be an object or a boolean');
  }
  const bad = unsupportedKeywords(schema);
  if (bad.size > 0) throw new UnsupportedSchemaError([...bad].sort());
  const c = new SchemaCompiler(schema as Schema, options);
  return c.finish(c.compile(schema as Schema));
}

class SchemaCompiler {
  readonly ws: number;
  readonly any: Node;
  readonly #strict: boolean;
  readonly #refs = new Map<string, Node>();

  constructor(
    readonly root: Schema,
    options: SchemaOptions,
  ) {
    this.ws = options.maxWhitespace ?? 8;
    this.#strict = options.strict ?? false;
    // Any JSON value: a union whose containers hold any JSON value again.
    const any = { k: UNION, id: 0, minLen: 0, alts: [], first: new Int8Array(256) } as Node & { alts: Node[] };
    const object: ObjectNode = { k: OBJECT, id: 0, minLen: 0, props: [], extra: any, ws: this.ws, keys: [], nextReq: [], rest: [], commaCost: [] };
    const alts: Node[] = [
      object,
      { k: ARRAY, id: 0, minLen: 0, items: any, min: 0, max: Infinity, ws: this.ws },
      { k: STRING, id: 0, minLen: 0 },
      { k: NUMBER, id: 0, minLen: 0, int: false },
      literals([true, false, null]),
    ];
    Object.assign(any, makeUnion(alts));
    this.any = any;
  }

  finish(value: Node): RootNode {
    const root: RootNode = { k: ROOT, id: 0, minLen: 0, value, ws: this.ws };
    const nodes = reachable(root);
    for (const [i, n] of nodes.entries()) n.id = i;
    settleCosts(nodes);
    return root;
  }

  compile(schema: Schema): Node {
    if (schema === true) return this.any;
    if (schema === false) throw new Error('the schema admits no JSON document (false)');
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new Error('a JSON schema must be an object or a boolean');
    if (typeof schema.$ref === 'string') return this.#ref(schema);
    if (schema.enum !== undefined || schema.const !== undefined) return this.#literals(schema);
    if (schema.anyOf !== undefined) {
      if (!Array.isArray(schema.anyOf) || schema.anyOf.length === 0) throw new Error('anyOf must be a non-empty array');
      const siblings = Object.keys(schema).filter((k) => SUPPORTED.has(k) && !['anyOf', '$defs', 'definitions'].includes(k));
      if (siblings.length > 0) throw new UnsupportedSchemaError(['anyOf'], `alongside ${siblings.join(', ')}`);
      return makeUnion((schema.anyOf as Schema[]).map((s) => this.compile(s)));
    }
    const types = typesOf(schema);
    const alts = types.map((t) => this.#typed(t, schema));
    return alts.length === 1 ? alts[0]! : makeUnion(alts);
  }

  #ref(schema: Record<string, unknown>): Node {
    const ref = schema.$ref as string;
    const others = Object.keys(schema).filter((k) => SUPPORTED.has(k) && !['$ref', '$defs', 'definitions'].includes(k));
    if (others.length > 0) throw new UnsupportedSchemaError(['$ref'], `alongside ${others.join(', ')}`);
    const known = this.#refs.get(ref);
    if (known !== undefined) return known;
    if (ref !== '#' && !ref.startsWith('#/')) throw new UnsupportedSchemaError(['$ref'], `only local references (#/...) are supported, got ${ref}`);
    let target: unknown = this.root;
    for (const part of ref
      .slice(2)
      .split('/')
      .filter((p, _i, all) => all.length > 1 || p !== '')) {
      const key = decodeURIComponent(part).replace(/~1/g, '/').replace(/~0/g, '~');
      target = typeof target === 'object' && target !== null ? (target as Record<string, unknown>)[key] : undefined;
    }
    if (target === undefined) throw new Error(`$ref ${ref} points to nothing`);
    // A placeholder first, filled in after: a recursive schema refers to itself while compiling.
    const placeholder = { k: -1 } as unknown as Node;
    this.#refs.set(ref, placeholder);
    Object.assign(placeholder, this.compile(target as Schema));
    if ((placeholder.k as number) === -1) throw new Error(`$ref ${ref} refers only to itself`);
    return placeholder;
  }

  #literals(schema: Record<string, unknown>): Node {
    // Only `type` may narrow an enum here: other constraints on its values would go unchecked.
    const others = Object.keys(schema).filter((k) => SUPPORTED.has(k) && !['enum', 'const', 'type', '$defs', 'definitions'].includes(k));
    if (others.length > 0) throw new UnsupportedSchemaError([schema.enum !== undefined ? 'enum' : 'const'], `alongside ${others.join(', ')}`);
    let values: unknown[] = schema.const !== undefined ? [schema.const] : (schema.enum as unknown[]);
    if (!Array.isArray(values)) throw new Error('enum must be an array');
    if (schema.const !== undefined && Array.isArray(schema.enum)) {
      const allowed = new Set(schema.enum.map((v) => JSON.stringify(v)));
      values = values.filter((v) => allowed.has(JSON.stringify(v)));
    }
    if (schema.type !== undefined) {
      const types = typesOf(schema);
      values = values.filter((v) => types.includes(jsonType(v)) || (jsonType(v) === 'integer' && types.includes('number')));
    }
    if (values.length === 0) throw new Error('the schema admits no JSON document (empty enum)');
    return literals(values);
  }

  #typed(type: string, s: Record<string, unknown>): Node {
    switch (type) {
      case 'object':
        return this.#object(s);
      case 'array': {
        const min = count(s.minItems, 'minItems') ?? 0;
        const max = count(s.maxItems, 'maxItems') ?? Infinity;
        if (min > max) throw new Error('the schema admits no JSON document (minItems > maxItems)');
        const items = s.items === false ? this.any : this.compile((s.items as Schema | undefined) ?? true);
        return { k: ARRAY, id: 0, minLen: 0, items, min, max: s.items === false ? 0 : max, ws: this.ws };
      }
      case 'string':
        return { k: STRING, id: 0, minLen: 0 };
      case 'number':
      case 'integer':
        return { k: NUMBER, id: 0, minLen: 0, int: type === 'integer' };
      case 'boolean':
        return literals([true, false]);
      default:
        return literals([null]);
    }
  }

  #object(s: Record<string, unknown>): ObjectNode {
    const properties = (s.properties ?? {}) as Record<string, Schema>;
    if (typeof properties !== 'object' || properties === null || Array.isArray(properties)) throw new Error('properties must be an object');
    if (s.required !== undefined && !(Array.isArray(s.required) && s.required.every((k) => typeof k === 'string'))) {
      throw new Error('required must be an array of strings');
    }
    const required = new Set((s.required ?? []) as string[]);
    const extraSchema = (s.additionalProperties ?? !this.#strict) as Schema;
    const props: Prop[] = Object.entries(properties).map(([key, sub]) => ({
      key,
      node: this.compile(sub),
      required: required.has(key),
      keyLen: utf8.encode(JSON.stringify(key)).length,
    }));
    for (const key of required) {
      if (key in properties) continue;
      if (extraSchema === false) throw new Error(`the schema admits no JSON document (required "${key}" is not an allowed property)`);
      props.push({ key, node: this.compile(extraSchema), required: true, keyLen: utf8.encode(JSON.stringify(key)).length });
    }
    // Free-form keys only where no property is declared: mixing both could repeat a declared key.
    const extra = props.length === 0 && extraSchema !== false ? this.compile(extraSchema) : null;
    return { k: OBJECT, id: 0, minLen: 0, props, extra, ws: this.ws, keys: [], nextReq: [], rest: [], commaCost: [] };
  }
}

function count(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw new Error(`${name} must be a non-negative integer`);
  return v as number;
}

function typesOf(s: Record<string, unknown>): string[] {
  if (s.type !== undefined) {
    const list = Array.isArray(s.type) ? (s.type as unknown[]) : [s.type];
    for (const t of list) if (typeof t !== 'string' || !TYPES.has(t)) throw new Error(`unknown JSON schema type ${JSON.stringify(t)}`);
    // integer is a subset of number: a union holding both would start alike.
    const types = list as string[];
    return types.includes('number') ? types.filter((t) => t !== 'integer') : types;
  }
  if (s.properties !== undefined || s.required !== undefined || s.additionalProperties !== undefined) return ['object'];
  if (s.items !== undefined || s.minItems !== undefined || s.maxItems !== undefined) return ['array'];
  return ['object', 'array', 'string', 'number', 'boolean', 'null'];
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function literals(values: readonly unknown[]): Node {
  const entries = values.map((v, i) => ({ bytes: utf8.encode(JSON.stringify(v)), value: i }));
  return { k: LITERAL, id: 0, minLen: 0, trie: new LitTrie(entries) };
}

/** Byte that can start a value of node n, as a list. */
function firstBytes(n: Node): number[] {
  switch (n.k) {
    case OBJECT:
      return [0x7b];
    case ARRAY:
      return [0x5b];
    case STRING:
      return [0x22];
    case NUMBER:
      return [0x2d, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39];
    case LITERAL:
      return [...n.trie.next[0]!.keys()];
    case UNION:
      return n.alts.flatMap(firstBytes);
    default:
      throw new UnsupportedSchemaError(['$ref'], 'a recursive reference directly inside anyOf');
  }
}

/** A union that picks its alternative by the value's first byte: alternatives must not start alike. */
function makeUnion(alts: Node[]): Node {
  const flat = alts.flatMap((a) => (a.k === UNION ? a.alts : [a]));
  if (flat.length === 1) return flat[0]!;
  const first = new Int8Array(256).fill(-1);
  flat.forEach((alt, i) => {
    for (const c of firstBytes(alt)) {
      if (first[c] !== -1) throw new UnsupportedSchemaError(['anyOf'], 'alternatives that can start with the same character');
      first[c] = i;
    }
  });
  return { k: UNION, id: 0, minLen: 0, alts: flat, first };
}

function reachable(root: Node): Node[] {
  const seen = new Set<Node>();
  const todo: Node[] = [root];
  while (todo.length > 0) {
    const n = todo.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    if (n.k === ROOT) todo.push(n.value);
    else if (n.k === OBJECT) todo.push(...n.props.map((p) => p.node), ...(n.extra ? [n.extra] : []));
    else if (n.k === ARRAY) todo.push(n.items);
    else if (n.k === UNION) todo.push(...n.alts);
  }
  return [...seen];
}
