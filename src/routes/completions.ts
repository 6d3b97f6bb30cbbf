// POST /v1/completions — OpenAI's text completion API: a prompt as text or token ids, or a
// batch of them (n choices each), with echo and the legacy logprobs shape.
import type { FastifyInstance } from 'fastify';
import { apiError } from '../errors.js';
import { legacyLogprobs } from '../http/choices.js';
import { engineFields } from '../http/fields.js';
import { type ChoiceFormat, type PlannedPrompt, planRequest, respond } from '../http/generation.js';
import { checkModel } from '../http/openai.js';
import { completionRequest } from '../http/schemas.js';
import { parseBody } from '../http/validate.js';

const format: ChoiceFormat = {
  idPrefix: 'cmpl',
  object: 'text_completion',
  chunkObject: 'text_completion',
  promptParam: 'prompt',
  choice: (index, text, finishReason, logprobs) => ({ index, text, finish_reason: finishReason, logprobs }),
  chunkChoice: (index, text, finishReason, _first, logprobs) => ({ index, text, finish_reason: finishReason, logprobs }),
  logprobs: (entries, offset) => legacyLogprobs(entries, offset),
};

export default async function completions(app: FastifyInstance): Promise<void> {
  app.post('/v1/completions', { config: { generation: true } }, async (request, reply) => {
    const body = parseBody(completionRequest, request.body);
    const services = app.services;
    const engine = services.engine();
    checkModel(body.model, engine.info.id);
    const { fields, plan } = engineFields(body, engine.info.vocabSize);
    // One prompt: text or token ids; an array of texts or token-id arrays: a batch.
    const batch =
      typeof body.prompt === 'string' || typeof body.prompt[0] === 'number' ? [body.prompt as string | number[]] : (body.prompt as (string | number[])[]);
    const prompts: PlannedPrompt[] = [];
    for (const [i, prompt] of batch.entries()) {
      if (prompt.length === 0) throw apiError('invalid_request', 'prompt must not be empty', batch.length > 1 ? `prompt[${i}]` : 'prompt');
      const genRequest = await planRequest(body, prompt, services, format, request.tenant, fields);
      prompts.push({ request: genRequest, text: typeof prompt === 'string' ? prompt : engine.tokenizer.decode(prompt) });
    }
    await respond(request, reply, services, body, prompts, plan, format);
  });
}
