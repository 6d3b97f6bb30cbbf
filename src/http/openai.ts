// OpenAI conventions the routes share: the `model` check, chat messages as template turns,
// and the usage object.
import type { Usage } from '../core/scheduler/sequence.js';
import { apiError } from '../errors.js';
import type { ChatTurn } from '../runtime/chat-template.js';
import type { ChatMessage } from './schemas.js';

/** A request may name the model; if it does, it must be the one this server serves. */
export function checkModel(requested: string | undefined, served: string): void {
  if (requested !== undefined && requested !== served) {
    throw apiError('model_not_found', `The model '${requested}' does not exist; this server serves '${served}'.`, 'model');
  }
}

/** Chat messages as the template's turns: `developer` is a system turn, text parts are joined. */
export function toTurns(messages: readonly ChatMessage[]): ChatTurn[] {
  return messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
  }));
}

export function usageOf(u: Usage) {
  return {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    prompt_tokens_details: { cached_tokens: u.cachedTokens },
  };
}
