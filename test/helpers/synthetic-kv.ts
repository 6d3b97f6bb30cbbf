// Synthetic KV caches for testing the cache manager without a model. Every element of every
// K/V tensor encodes (a) a tag chained over the tenant and every token up to and including
// its position — as a real model's keys and values depend on the whole prefix — (b) the
// position and (c) the element's lane (tensor, head, dim). A cache reused for the wrong
// tenant, the wrong prefix, blocks joined out of order or heads/positions mixed up when
// slicing therefore shows up as a value mismatch.
//
//   float32: value = ((tag × 64 + position) × 32 + lane), tag < 8191 → every value < 2^24, exact
//   float16 (raw bits in a Uint16Array): value = (tag mod 32) << 11 | position << 5 | lane
import { KvCache } from '../../src/core/kv/kv-cache.js';
import { type KvData, type KvLayout, allocKv } from '../../src/core/kv/layout.js';

const TAG_MOD = 8191;
export const MAX_POSITIONS = 64;

function tenantSeed(tenant: string): number {
  let h = 2166136261;
  for (let i = 0; i < tenant.length; i++) h = Math.imul(h ^ tenant.charCodeAt(i), 16777619) >>> 0;
  return h % TAG_MOD;
}

/** tags[p] is chained over the tenant and tokens[0..p]. */
export function contextTags(tenant: string, tokens: readonly number[], n = tokens.length): number[] {
  const tags: number[] = [];
  let tag = tenantSeed(tenant);
  for (let p = 0; p < n; p++) {
    const tok = tokens[p];
    if (tok === undefined) throw new Error(`no token at position ${p}`);
    tag = (tag * 131 + tok * 7 + 1) % TAG_MOD;
    tags.push(tag);
  }
  return tags;
}

function lanes(layout: KvLayout): number {
  return 2 * layout.layers * layout.kvHeads * layout.headDim;
}

export function checkLayout(layout: KvLayout): void {
  if (lanes(layout) > 32) throw new Error('synthetic layout too large: at most 32 lanes (tensor × head × dim)');
}

/** The value of tensor t (layer t>>1, K if even), head h, dim d at `pos` whose context tag is `tag`. */
export function kvValue(layout: KvLayout, tag: number, pos: number, t: number, h: number, d: number): number {
  if (pos >= MAX_POSITIONS) throw new Error(`synthetic positions stop at ${MAX_POSITIONS - 1}`);
  const lane = (t * layout.kvHeads + h) * layout.headDim + d;
  return layout.dtype === 'float32' ? (tag * MAX_POSITIONS + pos) * 32 + lane : ((tag % 32) << 11) | (pos << 5) | lane;
}

/** Decodes the position an element claims to hold (float32 layout). */
export function positionOf(value: number): number {
  return Math.floor(value / 32) % MAX_POSITIONS;
}

/**
 * What the engine does with a lease: a new cache of `length` tokens whose first base.length
 * positions are copied from `base` (the model reads the past and returns past + new as
 * `present`), the rest computed from `tokens`.
 */
export function extendKv(base: KvCache, tenant: string, tokens: readonly number[], length: number): KvCache {
  const { layout } = base;
  checkLayout(layout);
  const { kvHeads, headDim, dtype } = layout;
  const past = base.length;
  if (length < past) throw new Error(`cannot shrink ${past} → ${length}`);
  const tags = contextTags(tenant, tokens, length);
  const tensors: KvData[] = base.tensors.map((src, t) => {
    const dst = allocKv(dtype, kvHeads * length * headDim);
    for (let h = 0; h < kvHeads; h++) {
      dst.set(src.subarray(h * past * headDim, (h + 1) * past * headDim), h * length * headDim);
      for (let p = past; p < length; p++) {
        for (let d = 0; d < headDim; d++) dst[(h * length + p) * headDim + d] = kvValue(layout, tags[p]!, p, t, h, d);
      }
    }
    return dst;
  });
  return KvCache.of(layout, tensors, length);
}

/** A cache of `length` tokens computed from scratch. */
export function buildKv(layout: KvLayout, tenant: string, tokens: readonly number[], length = tokens.length): KvCache {
  return extendKv(KvCache.empty(layout), tenant, tokens, length);
}

/** Undefined when `kv` holds exactly the first `n` tokens of `tokens` for `tenant`; else what differs. */
export function kvMismatch(kv: KvCache, tenant: string, tokens: readonly number[], n: number): string | undefined {
  const { layout } = kv;
  const { kvHeads, headDim, layers } = layout;
  if (kv.length !== n) return `length ${kv.length}, expected ${n}`;
  if (kv.tensors.length !== 2 * layers) return `${kv.tensors.length} tensors, expected ${2 * layers}`;
  const tags = contextTags(tenant, tokens, n);
  for (let t = 0; t < 2 * layers; t++) {
    const data = kv.tensors[t]!;
    if (data.length < kvHeads * n * headDim) return `tensor ${t} has ${data.length} elements, expected ${kvHeads * n * headDim}`;
    for (let h = 0; h < kvHeads; h++) {
      for (let p = 0; p < n; p++) {
        for (let d = 0; d < headDim; d++) {
          const got = data[(h * n + p) * headDim + d];
          const want = kvValue(layout, tags[p]!, p, t, h, d);
          if (got !== want) return `tensor ${t} head ${h} pos ${p} dim ${d}: got ${got}, expected ${want}`;
        }
      }
    }
  }
  return undefined;
}

/** The slice of KvCacheManager a simulated engine drives. */
export interface LeaseLike {
  readonly kv: KvCache;
  readonly cachedTokens: number;
}
export interface ManagerLike<L extends LeaseLike> {
  grow(lease: L, tokens: number): void;
  release(lease: L, final?: { kv: KvCache; tokens: readonly number[] }): void;
}

/** One running request as the engine steps it: the prompt first, then one token a step. */
export class SimulatedRun<L extends LeaseLike> {
  readonly sequence: number[];
  kv: KvCache;
  steps = 0;

  constructor(
    readonly lease: L,
    readonly tenant: string,
    readonly prompt: readonly number[],
    /** Tokens the "model" samples, one a step (at least one: the prompt's step samples one). */
    readonly generated: readonly number[],
  ) {
    if (generated.length < 1) throw new Error('a run samples at least one token');
    this.sequence = [...prompt, ...generated];
    this.kv = lease.kv;
  }

  get done(): boolean {
    return this.steps >= this.generated.length;
  }

  /** The cache length once every step ran: the last sampled token is never fed. */
  get finalLength(): number {
    return this.prompt.length + this.generated.length - 1;
  }

  /** One forward pass: the cache grows to cover what was fed, and the manager is told. */
  step(manager: ManagerLike<L>): void {
    if (this.done) throw new Error('run already finished');
    const length = this.steps === 0 ? this.prompt.length : this.kv.length + 1;
    this.kv = extendKv(this.kv, this.tenant, this.sequence, length);
    this.steps++;
    manager.grow(this.lease, this.kv.length);
  }

  /** Runs the remaining steps and releases, keeping the cache (as the engine does) unless `keep` is false. */
  finish(manager: ManagerLike<L>, keep = true): { kv: KvCache; tokens: number[] } {
    while (!this.done) this.step(manager);
    const final = { kv: this.kv, tokens: this.sequence.slice(0, this.kv.length) };
    manager.release(this.lease, keep ? final : undefined);
    return final;
  }
}
