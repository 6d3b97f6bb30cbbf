// GET /v1/models — the one model this server serves, with its context length.
import type { FastifyInstance } from 'fastify';
import { apiError } from '../errors.js';

export default async function models(app: FastifyInstance): Promise<void> {
  const describe = () => {
    const { info } = app.services.engine();
    return {
      id: info.id,
      object: 'model',
      created: app.startedAt,
      owned_by: 'kvserve',
      context_length: info.contextLength,
      max_model_len: info.contextLength,
    };
  };
  app.get('/v1/models', async () => ({ object: 'list', data: [describe()] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    const model = describe();
    if (request.params.id !== model.id) throw apiError('model_not_found', `The model '${request.params.id}' does not exist.`, 'model');
    return model;
  });
}
