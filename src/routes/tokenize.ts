// POST /tokenize and /detokenize — as llama.cpp's server and vLLM have them.
import type { FastifyInstance } from 'fastify';
import { apiError } from '../errors.js';
import { checkModel, toTurns } from '../http/openai.js';
import { detokenizeRequest, tokenizeRequest } from '../http/schemas.js';
import { parseBody } from '../http/validate.js';

export default async function tokenize(app: FastifyInstance): Promise<void> {
  app.post('/tokenize', async (request) => {
    const body = parseBody(tokenizeRequest, request.body);
    const engine = app.services.engine();
    checkModel(body.model, engine.info.id);
    let text: string;
    if (body.prompt !== undefined) text = body.prompt;
    else if (body.messages) text = app.services.chatTemplate().render(toTurns(body.messages), body.add_generation_prompt ?? true);
    else throw apiError('invalid_request', 'prompt or messages is required', 'prompt');
    const tokens = await engine.encode(text);
    return { tokens, count: tokens.length, max_model_len: engine.info.contextLength };
  });

  app.post('/detokenize', async (request) => {
    const body = parseBody(detokenizeRequest, request.body);
    const engine = app.services.engine();
    checkModel(body.model, engine.info.id);
    const bad = body.tokens.findIndex((t) => t >= engine.info.vocabSize);
    if (bad >= 0)
      throw apiError('invalid_request', `tokens[${bad}]: id ${body.tokens[bad]} is outside the vocabulary (${engine.info.vocabSize})`, `tokens[${bad}]`);
    return { prompt: body.tokens.length ? engine.tokenizer.decode(body.tokens) : '' };
  });
}
