// Raw-HTTP helpers for the route tests: POST a JSON body, and read a text/event-stream
// response into its ordered items (comments and data events) with eventsource-parser.
import { createParser } from 'eventsource-parser';

export type SseItem = { kind: 'comment'; text: string } | { kind: 'data'; data: string; event: string | undefined };

export interface SseResult {
  status: number;
  headers: Headers;
  /** The body exactly as received. */
  raw: string;
  /** Comments and events in arrival order. */
  items: SseItem[];
  parseErrors: Error[];
}

export function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

/** Reads the whole SSE response (until the server ends it). */
export async function readSse(res: Response): Promise<SseResult> {
  const items: SseItem[] = [];
  const parseErrors: Error[] = [];
  const parser = createParser({
    onEvent: (e) => items.push({ kind: 'data', data: e.data, event: e.event }),
    onComment: (text) => items.push({ kind: 'comment', text }),
    onError: (err) => parseErrors.push(err),
  });
  const decoder = new TextDecoder();
  let raw = '';
  if (res.body) {
    for await (const bytes of res.body) {
      const text = decoder.decode(bytes, { stream: true });
      raw += text;
      parser.feed(text);
    }
  }
  const tail = decoder.decode();
  raw += tail;
  parser.feed(tail);
  return { status: res.status, headers: res.headers, raw, items, parseErrors };
}

export async function postSse(url: string, body: unknown): Promise<SseResult> {
  return readSse(await post(url, body));
}

/** The JSON payloads of every data event before the final `[DONE]`. */
export function payloads<T = Record<string, unknown>>(result: SseResult): T[] {
  const data = result.items.filter((i) => i.kind === 'data');
  return data.slice(0, -1).map((i) => JSON.parse(i.data) as T);
}
