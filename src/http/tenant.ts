// Who a request acts for: `request.tenant`, the isolation key of sessions, prefix blocks and
// limits. With API keys configured (api-keys.ts) every route that touches data needs
// `Authorization: Bearer <key>` and its key names the tenant; without keys there is one tenant.
// Also the tenant's limit on generations in flight, decided here, before any work starts.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { apiError } from '../errors.js';
import { type AuthSources, DEFAULT_TENANT, KeyRing, bearerToken } from './api-keys.js';

export { DEFAULT_TENANT };

/**
 * Routes open to anyone: probes, and documentation that holds no tenant's data. Everything
 * else — including URLs no route matches — needs a key (deny by default). /metrics has its
 * own key (METRICS_API_KEY).
 */
// The playground's page and its two files are open: the page asks for a key itself.
const OPEN_ROUTES = new Set(['/health', '/health/ready', '/openapi.json', '/', '/playground/app.js', '/playground/app.css']);

/** Whether a route acts on a tenant's data (counted per tenant in the metrics). */
export function isTenantRoute(route: string | undefined): boolean {
  return route !== undefined && !OPEN_ROUTES.has(route) && route !== '/metrics';
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated tenant; '' for a request refused for its key. */
    tenant: string;
  }
  interface FastifyContextConfig {
    /** A generation: counts toward its tenant's maxRequests from the handler's start to the response's end. */
    generation?: boolean;
  }
  interface FastifyInstance {
    auth: Auth;
  }
}

export class Auth {
  readonly #sources: AuthSources;
  #ring: KeyRing;
  readonly #inFlight = new Map<string, number>();

  constructor(sources: AuthSources) {
    this.#sources = sources;
    this.#ring = KeyRing.load(sources);
  }

  get keys(): KeyRing {
    return this.#ring;
  }

  /**
   * Reads the key file again (SIGHUP). Requests in flight keep going; the next request is
   * checked against the new keys. A bad file throws (one line) and the keys in force stay.
   */
  reload(): KeyRing {
    this.#ring = KeyRing.load(this.#sources);
    return this.#ring;
  }

  /** Generations the tenant has running or queued (as counted on the HTTP thread). */
  inFlight(tenant: string): number {
    return this.#inFlight.get(tenant) ?? 0;
  }

  /** Counts a generation against the tenant's maxRequests, or refuses it (429); returns its release. */
  admit(tenant: string): () => void {
    const max = this.#ring.limits(tenant).maxRequests;
    const n = this.inFlight(tenant);
    if (max !== undefined && n >= max) {
      throw apiError('rate_limited', `This API key's tenant already has ${n} requests running or queued (its limit is ${max}); retry later.`);
    }
    this.#inFlight.set(tenant, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = this.inFlight(tenant) - 1;
      if (left > 0) this.#inFlight.set(tenant, left);
      else this.#inFlight.delete(tenant);
    };
  }

  /** The tenant of a request to a protected route; throws 401 invalid_api_key. */
  authenticate(request: FastifyRequest): string {
    const key = bearerToken(request.headers.authorization);
    const tenant = key === undefined ? undefined : this.#ring.tenantOf(key);
    if (tenant !== undefined) return tenant;
    request.tenant = '';
    throw apiError(
      'invalid_api_key',
      key === undefined
        ? "You didn't provide an API key. Send it in the Authorization header as 'Authorization: Bearer <key>'."
        : 'Incorrect API key provided.',
    );
  }
}

async function tenant(app: FastifyInstance, opts: { config: Readonly<Config> }): Promise<void> {
  const auth = new Auth(opts.config.auth);
  app.decorate('auth', auth);
  app.decorateRequest('tenant', DEFAULT_TENANT);

  app.addHook('onRequest', async (request) => {
    const keys = auth.keys;
    const route = request.routeOptions.url;
    if (route === '/metrics') {
      const key = bearerToken(request.headers.authorization);
      if (keys.metricsProtected && (key === undefined || !keys.isMetricsKey(key))) {
        throw apiError('invalid_api_key', key === undefined ? 'GET /metrics needs METRICS_API_KEY as a Bearer token.' : 'Incorrect API key provided.');
      }
      return;
    }
    if (!keys.enabled || (route !== undefined && OPEN_ROUTES.has(route))) return;
    request.tenant = auth.authenticate(request);
  });

  // Decided here, synchronously, before the handler runs: a refusal is always a status.
  app.addHook('preHandler', async (request, reply) => {
    if (!request.routeOptions.config.generation) return;
    const release = auth.admit(request.tenant);
    // 'close' comes once the response ended or the client left (hijacked streams included).
    if (reply.raw.closed || reply.raw.destroyed) release();
    else reply.raw.once('close', release);
  });
}

export default fp(tenant, { name: 'kvserve-tenant', fastify: '5.x', dependencies: ['kvserve-services'] });
