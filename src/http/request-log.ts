// One log line and one request counter per request, however it ended — including clients that
// left before a response (Fastify's onResponse never runs for those). Generation routes fill
// in request.generation as they go; prompt text never appears in the log.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { FinishReason } from '../core/scheduler/events.js';
import { isTenantRoute } from './tenant.js';

export interface GenerationStats {
  startedAt: number;
  promptTokens?: number;
  completionTokens?: number;
  ttftMs?: number;
  cachedTokens?: number;
  finishReason?: FinishReason;
  /** Set by streaming responses, which bypass Fastify's reply. */
  status?: number;
  /** The request's log line and counters are written once. */
  finished?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    generation: GenerationStats;
  }
}

/** Writes the request's log line and counts it, once. */
export function finishRequest(
  request: Pick<FastifyRequest, 'generation' | 'routeOptions' | 'server' | 'log' | 'url' | 'method' | 'tenant'>,
  replyStatus: number,
): void {
  const g = request.generation;
  if (g.finished) return;
  g.finished = true;
  const route = request.routeOptions.url;
  const status = g.status ?? replyStatus;
  // Unmatched URLs share one label value: client-chosen paths must not explode cardinality.
  const { metrics } = request.server.services;
  metrics.requests.inc({ route: route ?? 'unmatched', status });
  // Tenant names come from the key file (a bounded label set); refused keys have no tenant.
  if (request.tenant && isTenantRoute(route)) metrics.tenantRequests.inc({ tenant: request.tenant, status });
  request.log.info(
    {
      route: route ?? request.url,
      method: request.method,
      status,
      promptTokens: g.promptTokens,
      cachedTokens: g.cachedTokens,
      completionTokens: g.completionTokens,
      finishReason: g.finishReason,
      ttftMs: g.ttftMs === undefined ? undefined : Math.round(g.ttftMs * 10) / 10,
      durationMs: Math.round((performance.now() - g.startedAt) * 10) / 10,
    },
    'request',
  );
}

export default fp(
  async (app: FastifyInstance) => {
    app.decorateRequest('generation', null as unknown as GenerationStats);
    app.addHook('onRequest', async (request, reply) => {
      request.generation = { startedAt: performance.now() };
      reply.header('x-request-id', request.id);
    });
    app.addHook('onResponse', async (request, reply) => finishRequest(request, reply.statusCode));
  },
  { name: 'kvserve-request-log', fastify: '5.x', dependencies: ['kvserve-services'] },
);
