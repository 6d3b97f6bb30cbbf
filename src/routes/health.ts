// GET /health (liveness: the process serves HTTP) and /health/ready (readiness: the model is
// loaded and the engine worker answers a ping).
import type { FastifyInstance } from 'fastify';

export default async function health(app: FastifyInstance): Promise<void> {
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/health/ready', async (_request, reply) => {
    const services = app.services;
    const ready = services.ready && (await services.engine().ping(2000));
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready' });
  });
}
