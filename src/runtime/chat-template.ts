// Renders chat messages into a prompt with the model's own Jinja chat_template (from
// tokenizer_config.json, via @huggingface/jinja, as Transformers.js does), or a documented
// plain template when the model has none:
//
//   SYSTEM:\n<content>\n\nUSER:\n<content>\n\nASSISTANT:\n
import { Template } from '@huggingface/jinja';

export interface ChatTurn {
  role: string;
  content: string;
}

export const PLAIN_TEMPLATE =
  "{% for message in messages %}{{ message['role'] | upper }}:\n{{ message['content'] }}\n\n{% endfor %}" +
  '{% if add_generation_prompt %}ASSISTANT:\n{% endif %}';

export class ChatTemplate {
  readonly #template: Template;
  readonly #specials: Record<string, string>;

  constructor(source: string | undefined, specials: { bos_token?: string; eos_token?: string } = {}) {
    this.#template = new Template(source ?? PLAIN_TEMPLATE);
    this.#specials = { bos_token: specials.bos_token ?? '', eos_token: specials.eos_token ?? '' };
  }

  render(messages: readonly ChatTurn[], addGenerationPrompt = true): string {
    return this.#template.render({ messages, add_generation_prompt: addGenerationPrompt, ...this.#specials });
  }
}
