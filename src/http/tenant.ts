// Who a request acts for: `request.tenant`, the isolation key of sessions, prefix blocks and
// limits. One tenant until authentication (API keys) names more; routes read only this.
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

/** The tenant of a service without API keys. */
export const DEFAULT_TENANT = 'default';

declare module 'fastify' {
  interface FastifyRequest {
    tenant: string;
  }
}

async function tenant(app: FastifyInstance): Promise<void> {
  app.decorateRequest('tenant', DEFAULT_TENANT);
}

export default fp(tenant, { name: 'kvserve-tenant' });
