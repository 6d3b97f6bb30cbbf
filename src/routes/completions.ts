// POST /v1/completions — OpenAI's text completion API.
import type { FastifyInstance } from 'fastify';
import { apiError } from '../errors.js';
import { type ChoiceFormat, planRequest, respond } from '../http/generation.js';
import { checkModel } from '../http/openai.js';
import { completionRequest } from '../http/schemas.js';
import { parseBody } from '../http/validate.js';

const format: ChoiceFormat = {
  idPrefix: 'cmpl',
  object: 'text_completion',
  chunkObject: 'text_completion',
  promptParam: 'prompt',
  choice: (text, finishReason) => ({ index: 0, text, finish_reason: finishReason, logprobs: null }),
  chunkChoice: (text, finishReason) => ({ index: 0, text, finish_reason: finishReason, logprobs: null }),
};

export default async function completions(app: FastifyInstance): Promise<void> {
  app.post('/v1/completions', { config: { generation: true } }, async (request, reply) => {
    const body = parseBody(completionRequest, request.body);
    const services = app.services;
    const engine = services.engine();
    checkModel(body.model, engine.info.id);
    const prompt = typeof body.prompt === 'string' ? body.prompt : body.prompt[0]!;
    if (prompt.length === 0) throw apiError('invalid_request', 'prompt must not be empty', 'prompt');
    const genRequest = await planRequest(body, prompt, services, format, request.tenant);
    await respond(request, reply, services, body, genRequest, format);
  });
}
