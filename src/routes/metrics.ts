// GET /metrics — Prometheus exposition from the service's own registry. The engine's figures
// are read from the worker by the metrics' collect hooks at scrape time (src/metrics/external.ts):
// no work when nobody scrapes.
import type { FastifyInstance } from 'fastify';

export default async function metrics(app: FastifyInstance): Promise<void> {
  app.get('/metrics', async (_request, reply) => {
    const { registry } = app.services.metrics;
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
