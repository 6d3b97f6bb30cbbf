// GET /v1/sessions, GET and DELETE /v1/sessions/:id — the named KV caches kept between
// requests (body field `session_id`), scoped to the caller's tenant.
import type { FastifyInstance } from 'fastify';
import { apiError } from '../errors.js';

export default async function sessions(app: FastifyInstance): Promise<void> {
  app.get('/v1/sessions', async (request) => {
    const data = await app.services.engine().sessions(request.tenant);
    return { object: 'list', data: data.map((s) => ({ object: 'session', ...s })) };
  });

  app.get<{ Params: { id: string } }>('/v1/sessions/:id', async (request) => {
    const session = await app.services.engine().session(request.tenant, request.params.id);
    if (!session) throw apiError('session_not_found', `No session '${request.params.id}'.`, 'id');
    return { object: 'session', ...session };
  });

  app.delete<{ Params: { id: string } }>('/v1/sessions/:id', async (request) => {
    const deleted = await app.services.engine().deleteSession(request.tenant, request.params.id);
    if (!deleted) throw apiError('session_not_found', `No session '${request.params.id}'.`, 'id');
    return { id: request.params.id, object: 'session', deleted: true };
  });
}
