// The page's calls to kvserve: the API key from localStorage as a Bearer token, any non-2xx
// answer turned into its OpenAI-style error message, and an SSE reader over fetch's stream.

const KEY = 'kvserve.apiKey';

export const apiKey = {
  get: (): string => localStorage.getItem(KEY) ?? '',
  set: (value: string): void => (value ? localStorage.setItem(KEY, value) : localStorage.removeItem(KEY)),
};

/** A refusal from the API: the status and the body's `error.message` (and `code`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null,
  ) {
    super(message);
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as { error?: { message?: string; code?: string | null } };
    if (body.error?.message) return new ApiError(res.status, body.error.message, body.error.code ?? null);
  } catch {
    // not JSON: fall through to the status line
  }
  return new ApiError(res.status, `${res.status} ${res.statusText}${text ? `: ${text.slice(0, 200)}` : ''}`, null);
}

/** fetch with the key; rejects with an ApiError on any non-2xx. */
export async function call(path: string, init: RequestInit & { json?: unknown } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const key = apiKey.get();
  if (key) headers.set('authorization', `Bearer ${key}`);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(init.json);
  }
  const res = await fetch(path, { ...init, headers, body: body ?? null });
  if (!res.ok) throw await errorOf(res);
  return res;
}

export async function callJson<T>(path: string, init: RequestInit & { json?: unknown } = {}): Promise<T> {
  return (await call(path, init)).json() as Promise<T>;
}

/**
 * Each `data:` payload of an SSE response, parsed as JSON, until `[DONE]`. Events are split
 * on blank lines; comments (`: ping`) are skipped. An `{"error":…}` event (a refusal after
 * the stream started) is thrown as an ApiError.
 */
export async function* events(res: Response): AsyncGenerator<Record<string, unknown>> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf('\n\n');
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      const event = JSON.parse(data) as Record<string, unknown>;
      const error = event.error as { message?: string; code?: string } | undefined;
      if (error) throw new ApiError(200, error.message ?? 'stream error', error.code ?? null);
      yield event;
    }
  }
}
