// POST /v1/chat/completions — OpenAI's chat API; messages are rendered with the model's
// chat template, then generated like a completion.
import type { FastifyInstance } from 'fastify';
import { chatLogprobs } from '../http/choices.js';
import { engineFields } from '../http/fields.js';
import { type ChoiceFormat, checkPromptSize, planRequest, respond } from '../http/generation.js';
import { checkModel, toTurns } from '../http/openai.js';
import { chatRequest } from '../http/schemas.js';
import { parseBody } from '../http/validate.js';

const format: ChoiceFormat = {
  idPrefix: 'chatcmpl',
  object: 'chat.completion',
  chunkObject: 'chat.completion.chunk',
  promptParam: 'messages',
  choice: (index, text, finishReason, logprobs) => ({ index, message: { role: 'assistant', content: text }, finish_reason: finishReason, logprobs }),
  chunkChoice: (index, text, finishReason, first, logprobs) => ({
    index,
    // OpenAI sends the role in the first chunk, even when no text precedes the finish.
    delta: first ? { role: 'assistant', content: text } : finishReason ? {} : { content: text },
    finish_reason: finishReason,
    logprobs,
  }),
  logprobs: (entries) => chatLogprobs(entries),
};

export default async function chat(app: FastifyInstance): Promise<void> {
  app.post('/v1/chat/completions', { config: { generation: true } }, async (request, reply) => {
    const body = parseBody(chatRequest, request.body);
    const services = app.services;
    const engine = services.engine();
    checkModel(body.model, engine.info.id);
    const { fields, plan } = engineFields(body, engine.info.vocabSize);
    const turns = toTurns(body.messages);
    checkPromptSize(
      services,
      'messages',
      turns.reduce((n, m) => n + m.content.length, 0),
      turns.length,
    );
    const prompt = services.chatTemplate().render(turns);
    const genRequest = await planRequest(body, prompt, services, format, request.tenant, fields);
    await respond(request, reply, services, body, [{ request: genRequest, text: prompt }], plan, format);
  });
}
