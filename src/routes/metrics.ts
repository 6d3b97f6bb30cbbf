// GET /metrics — Prometheus exposition from the service's own registry; the engine's cache
// and queue figures are fetched from the worker at scrape time (no work when nobody scrapes).
import type { FastifyInstance } from 'fastify';

export default async function metrics(app: FastifyInstance): Promise<void> {
  app.get('/metrics', async (request, reply) => {
    const { metrics: m } = app.services;
    if (app.services.ready) {
      try {
        m.update(await app.services.engine().stats());
      } catch (err) {
        // A busy or stopped worker must not fail the scrape: serve the last figures.
        request.log.warn({ err }, 'engine stats unavailable');
      }
    }
    return reply.type(m.registry.contentType).send(await m.registry.metrics());
  });
}
