// One answer: streams a chat or completion request into a new transcript entry, then shows
// its usage — the prompt with the part served from the KV cache highlighted (the first
// `cached_tokens` tokens of the prompt, found with /tokenize and turned back into text with
// /detokenize), time to first token and decode tokens per second.
import { call, callJson, events } from './api.js';
import { el } from './format.js';

export type Turn = { role: 'user' | 'assistant'; content: string };
type Request = { messages?: Turn[]; prompt?: string };
type Usage = { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } };

/** Appends the entry for `input`, streams the answer into it and returns the answer's text. */
export async function generate(
  transcript: HTMLElement,
  request: Request,
  params: Record<string, unknown>,
  signal: AbortSignal,
  input: string,
): Promise<string> {
  const chat = request.messages !== undefined;
  const entry = el('li', undefined, 'turn');
  const you = el('div', undefined, 'you');
  you.append(el('span', chat ? 'you' : 'prompt', 'role'), el('p', input, 'text'));
  const out = el('p', '', 'text answer-text');
  const answer = el('div', undefined, 'answer');
  answer.append(el('span', 'model', 'role'), out);
  const usageBox = el('div', undefined, 'usage');
  entry.append(you, answer, usageBox);
  transcript.append(entry);
  entry.scrollIntoView({ block: 'end' });

  const started = performance.now();
  let first: number | undefined;
  let usage: Usage | undefined;
  let finish: string | undefined;
  entry.dataset.state = 'waiting';
  const res = await call(chat ? '/v1/chat/completions' : '/v1/completions', {
    method: 'POST',
    json: { ...request, ...params, stream: true, stream_options: { include_usage: true } },
    signal,
  }).catch((err: unknown) => {
    entry.remove();
    throw err;
  });
  let textSoFar = '';
  try {
    for await (const event of events(res)) {
      const choice = (event.choices as { delta?: { content?: string }; text?: string; finish_reason?: string | null }[] | undefined)?.[0];
      const delta = choice?.delta?.content ?? choice?.text ?? '';
      if (delta) {
        first ??= performance.now();
        entry.dataset.state = 'streaming';
        textSoFar += delta;
        out.textContent = textSoFar;
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (event.usage) usage = event.usage as Usage;
    }
  } catch (err) {
    entry.dataset.state = 'error';
    if ((err as Error).name === 'AbortError') finish = 'stopped';
    else throw err;
  }
  const ended = performance.now();
  entry.dataset.state = 'done';
  if (finish) entry.dataset.finish = finish;
  if (usage) {
    entry.dataset.usage = JSON.stringify(usage);
    const ttft = first === undefined ? undefined : first - started;
    const rate = first !== undefined && usage.completion_tokens > 1 ? (usage.completion_tokens - 1) / ((ended - first) / 1000) : undefined;
    usageBox.append(
      el(
        'p',
        `${usage.prompt_tokens} prompt tokens (${usage.prompt_tokens_details.cached_tokens} cached) · ${usage.completion_tokens} completion tokens` +
          ` · TTFT ${ttft === undefined ? '–' : `${ttft.toFixed(0)} ms`} · ${rate === undefined ? '–' : `${rate.toFixed(1)} tokens/s`}`,
        'figures',
      ),
    );
    await highlight(usageBox, request, usage.prompt_tokens_details.cached_tokens).catch((err: Error) =>
      usageBox.append(el('p', `cannot show the prompt: ${err.message}`, 'note')),
    );
  }
  return textSoFar;
}

/** The prompt as the model saw it, its first `cached` tokens in a <mark>. */
async function highlight(box: HTMLElement, request: Request, cached: number): Promise<void> {
  const tokenized = await callJson<{ tokens: number[] }>('/tokenize', {
    method: 'POST',
    json: request.messages ? { messages: request.messages, add_generation_prompt: true } : { prompt: request.prompt },
  });
  const cut = Math.min(cached, tokenized.tokens.length);
  const text = (tokens: number[]) => callJson<{ prompt: string }>('/detokenize', { method: 'POST', json: { tokens } }).then((r) => r.prompt);
  const [head, tail] = await Promise.all([text(tokenized.tokens.slice(0, cut)), text(tokenized.tokens.slice(cut))]);
  const view = el('pre', undefined, 'prompt-view');
  view.setAttribute('aria-label', `prompt; the first ${cut} tokens came from the KV cache`);
  const mark = el('mark', head, 'cached');
  mark.dataset.cachedTokens = String(cut);
  mark.title = `${cut} tokens from the KV cache`;
  view.append(mark, el('span', tail, 'computed'));
  const label = el('p', `prompt — highlighted: ${cut} tokens from the KV cache`, 'note');
  box.append(label, view);
}
