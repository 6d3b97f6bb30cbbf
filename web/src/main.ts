// The playground: chat and completion modes streamed over SSE, sampling controls, a session
// toggle, per-answer usage with the cached part of the prompt highlighted, TTFT and tokens/s;
// the KV panel beside it. Plain TypeScript and DOM, bundled by esbuild (web/build.mjs).
import { ApiError, apiKey } from './api.js';
import { generate, type Turn } from './generate.js';
import { KvPanel } from './panel.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const keyInput = $<HTMLInputElement>('api-key');
const errorBox = $('error');
const prompt = $<HTMLTextAreaElement>('prompt');
const sendButton = $<HTMLButtonElement>('send');
const stopButton = $<HTMLButtonElement>('stop-button');
const sessionId = $<HTMLInputElement>('session-id');
const useSession = $<HTMLInputElement>('use-session');
const transcript = $<HTMLOListElement>('transcript');

/** Chat: the turns so far. Completion: the text so far (prompts and completions). */
let turns: Turn[] = [];
let text = '';
let running: AbortController | undefined;

const mode = (): 'chat' | 'completion' => (document.querySelector<HTMLInputElement>('input[name=mode]:checked')?.value as 'chat') ?? 'chat';
const newSessionId = () => `pg-${crypto.randomUUID().slice(0, 8)}`;

/**
 * Shows an API refusal in `box`; a 401 also asks for a key. `undefined` clears it. Only a
 * refusal of the user's own request moves the focus to the key field: the KV panel's polls
 * run in the background and must not pull the cursor out of the prompt being typed.
 */
function report(box: HTMLElement, err: ApiError | undefined, focusKey = false): void {
  box.hidden = !err;
  box.textContent = err ? err.message : '';
  if (err) box.dataset.status = String(err.status);
  else delete box.dataset.status;
  if (err?.status === 401) {
    keyInput.setAttribute('aria-invalid', 'true');
    box.textContent = `${err.message} — enter an API key above.`;
    if (focusKey) keyInput.focus();
  }
}

keyInput.value = apiKey.get();
keyInput.addEventListener('change', () => {
  apiKey.set(keyInput.value.trim());
  keyInput.removeAttribute('aria-invalid');
  void panel.refresh();
});

function newConversation(): void {
  running?.abort();
  turns = [];
  text = '';
  transcript.replaceChildren();
  sessionId.value = newSessionId();
}
$('new-conversation').addEventListener('click', newConversation);
for (const radio of document.querySelectorAll('input[name=mode]')) radio.addEventListener('change', newConversation);
sessionId.value = newSessionId();

function numberOf(id: string): number | undefined {
  const value = $<HTMLInputElement>(id).value.trim();
  return value === '' ? undefined : Number(value);
}

async function send(): Promise<void> {
  const input = prompt.value;
  if (!input.trim() || running) return;
  report(errorBox, undefined);
  running = new AbortController();
  sendButton.disabled = true;
  stopButton.disabled = false;
  const stop = $<HTMLTextAreaElement>('stop')
    .value.split('\n')
    .filter((s) => s !== '');
  const params = {
    temperature: numberOf('temperature'),
    top_p: numberOf('top_p'),
    top_k: numberOf('top_k'),
    max_tokens: numberOf('max_tokens'),
    seed: numberOf('seed'),
    stop: stop.length ? stop : undefined,
    session_id: useSession.checked && sessionId.value ? sessionId.value : undefined,
  };
  const chat = mode() === 'chat';
  const request = chat ? { messages: [...turns, { role: 'user' as const, content: input }] } : { prompt: text + input };
  try {
    const answer = await generate(transcript, request, params, running.signal, input);
    if (chat) turns = [...request.messages!, { role: 'assistant', content: answer }];
    else text = request.prompt + answer;
    prompt.value = '';
  } catch (err) {
    report(errorBox, err instanceof ApiError ? err : new ApiError(0, (err as Error).message, null), true);
  } finally {
    running = undefined;
    sendButton.disabled = false;
    stopButton.disabled = true;
    void panel.refresh();
  }
}

$('send-form').addEventListener('submit', (e) => {
  e.preventDefault();
  void send();
});
prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    void send();
  }
});
stopButton.addEventListener('click', () => running?.abort());

const panel = new KvPanel();
panel.onError = (err) => report($('kv-error'), err);
panel.start();
