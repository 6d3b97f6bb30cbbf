// API keys and the tenants they stand for: read from API_KEYS_FILE (and API_KEY, METRICS_API_KEY),
// kept only as SHA-256 digests, checked in constant time. A bad file is one line naming the
// problem: at start-up it stops the service, on SIGHUP the keys in force stay.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError } from '../config.js';

/** The tenant of a service without API keys, and of API_KEY. */
export const DEFAULT_TENANT = 'default';

export interface TenantLimits {
  /** Generations running + queued at once; unset: only the service's own limits. */
  maxRequests?: number | undefined;
  /** The fraction of the KV budget past which the tenant's cached entries are evicted first. */
  kvShare: number;
}

const hex64 = /^[0-9a-f]{64}$/i;

const keyEntry = z
  .strictObject({
    // Tenant names become metric labels and parts of cache keys: short, printable.
    tenant: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, . _ - only'),
    key: z.string().min(1).optional(),
    sha256: z.string().regex(hex64, 'must be 64 hexadecimal characters (a SHA-256 digest)').optional(),
    maxRequests: z.number().int().positive().optional(),
    kvShare: z.number().gt(0).max(1).optional(),
  })
  .refine((k) => (k.key === undefined) !== (k.sha256 === undefined), { message: 'needs exactly one of "key" or "sha256"' });

const keyFile = z.strictObject({ keys: z.array(keyEntry) });

export const sha256 = (key: string): Buffer => createHash('sha256').update(key, 'utf8').digest();

export interface AuthSources {
  keysFile?: string | undefined;
  apiKey?: string | undefined;
  metricsApiKey?: string | undefined;
}

export class KeyRing {
  /** Digest (hex) → [digest, tenant]. */
  readonly #keys: Map<string, { digest: Buffer; tenant: string }>;
  readonly #tenants: Map<string, TenantLimits>;
  readonly #metricsKey: Buffer | undefined;

  private constructor(keys: Map<string, { digest: Buffer; tenant: string }>, tenants: Map<string, TenantLimits>, metricsKey: Buffer | undefined) {
    this.#keys = keys;
    this.#tenants = tenants;
    this.#metricsKey = metricsKey;
  }

  /** Reads the configured keys; throws a one-line ConfigError naming what is wrong. */
  static load(sources: AuthSources): KeyRing {
    const entries: Array<z.infer<typeof keyEntry>> = [];
    const where = sources.keysFile ? `API_KEYS_FILE ${sources.keysFile}` : '';
    if (sources.keysFile) {
      let raw: unknown;
      try {
        raw = JSON.parse(readFileSync(sources.keysFile, 'utf8'));
      } catch (err) {
        const reason = err instanceof SyntaxError ? `not valid JSON (${err.message})` : `cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
        throw new ConfigError(`${where}: ${reason}`);
      }
      const parsed = keyFile.safeParse(raw);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        const path = issue.path
          .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
          .join('')
          .replace(/^\./, '');
        throw new ConfigError(`${where}: ${path || '(top level)'}: ${issue.message.replace(/\s+/g, ' ')}`);
      }
      if (parsed.data.keys.length === 0) throw new ConfigError(`${where}: keys: the list is empty (unset API_KEYS_FILE to run without keys)`);
      entries.push(...parsed.data.keys);
    }
    if (sources.apiKey) entries.push({ tenant: DEFAULT_TENANT, key: sources.apiKey });

    const keys = new Map<string, { digest: Buffer; tenant: string }>();
    const declared = new Map<string, Omit<TenantLimits, 'kvShare'> & { kvShare?: number | undefined; at: number }>();
    for (const [i, e] of entries.entries()) {
      const at = i < entries.length - (sources.apiKey ? 1 : 0) ? `${where}: keys[${i}]` : 'API_KEY';
      const digest = e.sha256 !== undefined ? Buffer.from(e.sha256, 'hex') : sha256(e.key!);
      const id = digest.toString('hex');
      // Never echo a key: the message names the entry only.
      if (keys.has(id)) throw new ConfigError(`${at}: the same key is listed twice`);
      keys.set(id, { digest, tenant: e.tenant });
      const prior = declared.get(e.tenant);
      if (!prior) {
        declared.set(e.tenant, { maxRequests: e.maxRequests, kvShare: e.kvShare, at: i });
        continue;
      }
      // Several keys may name one tenant; its limits are stated once (or repeated equal).
      for (const field of ['maxRequests', 'kvShare'] as const) {
        if (e[field] === undefined) continue;
        if (prior[field] !== undefined && prior[field] !== e[field]) throw new ConfigError(`${at}: tenant '${e.tenant}' already has ${field} ${prior[field]}`);
        prior[field] = e[field];
      }
    }
    // A tenant without kvShare gets an equal part of the budget: one tenant alone has all of it.
    const tenants = new Map<string, TenantLimits>();
    for (const [name, d] of declared) tenants.set(name, { maxRequests: d.maxRequests, kvShare: d.kvShare ?? 1 / declared.size });
    return new KeyRing(keys, tenants, sources.metricsApiKey ? sha256(sources.metricsApiKey) : undefined);
  }

  /** Whether requests must present a key (API_KEYS_FILE or API_KEY is set). */
  get enabled(): boolean {
    return this.#keys.size > 0;
  }

  get metricsProtected(): boolean {
    return this.#metricsKey !== undefined;
  }

  get keyCount(): number {
    return this.#keys.size;
  }

  /** Tenant names (bounded: they come from the key file). */
  tenants(): string[] {
    return [...this.#tenants.keys()];
  }

  limits(tenant: string): TenantLimits {
    return this.#tenants.get(tenant) ?? { kvShare: 1 };
  }

  /**
   * The tenant a presented key stands for, or undefined. The key is hashed first (its
   * length is the only input to that time), the digest looked up, and the stored digest
   * compared with timingSafeEqual: nothing about a stored key's bytes shapes the timing.
   */
  tenantOf(presented: string): string | undefined {
    const digest = sha256(presented);
    const found = this.#keys.get(digest.toString('hex'));
    if (!found || !timingSafeEqual(found.digest, digest)) return undefined;
    return found.tenant;
  }

  /** Whether a presented key is METRICS_API_KEY. */
  isMetricsKey(presented: string): boolean {
    return this.#metricsKey !== undefined && timingSafeEqual(this.#metricsKey, sha256(presented));
  }
}

/** The key of an `Authorization: Bearer <key>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return m?.[1];
}
