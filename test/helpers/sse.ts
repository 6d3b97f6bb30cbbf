// The one Server-Sent Events reader of the tests and the benchmarks: an incremental parser
// (eventsource-parser) fed as bytes arrive, and a reader of a whole response body that calls
// back on each data event (so a test can act mid-stream) and reports how the stream ended.
import { createParser, type EventSourceParser } from 'eventsource-parser';

export type SseItem = { kind: 'comment'; text: string } | { kind: 'data'; data: string; event: string | undefined };

/** Incremental: push() text as it arrives, get back the items it completed. */
export class SseReader {
  readonly #parser: EventSourceParser;
  #out: SseItem[] = [];
  readonly parseErrors: Error[] = [];
  /** True once `data: [DONE]` was read. */
  done = false;

  constructor() {
    this.#parser = createParser({
      onEvent: (e) => {
        if (e.data === '[DONE]') this.done = true;
        this.#out.push({ kind: 'data', data: e.data, event: e.event });
      },
      onComment: (text) => this.#out.push({ kind: 'comment', text }),
      onError: (err) => this.parseErrors.push(err),
    });
  }

  push(text: string): SseItem[] {
    this.#parser.feed(text);
    const out = this.#out;
    this.#out = [];
    return out;
  }
}

export interface SseResult {
  /** The body exactly as received. */
  raw: string;
  /** Comments and events in arrival order. */
  items: SseItem[];
  /** The data of every event, in order (the last is '[DONE]' when the stream completed). */
  events: string[];
  parseErrors: Error[];
  /** Set when reading failed (the connection was reset or aborted). */
  error?: Error;
}

/** Reads a text/event-stream body to its end, calling `onEvent` on each data event as it arrives. */
export async function readSse(body: AsyncIterable<Uint8Array> | null, onEvent?: (data: string, index: number) => void): Promise<SseResult> {
  const reader = new SseReader();
  const items: SseItem[] = [];
  const events: string[] = [];
  const decoder = new TextDecoder();
  let raw = '';
  const take = (text: string): void => {
    raw += text;
    for (const item of reader.push(text)) {
      items.push(item);
      if (item.kind !== 'data') continue;
      events.push(item.data);
      onEvent?.(item.data, events.length - 1);
    }
  };
  try {
    if (body) for await (const bytes of body) take(decoder.decode(bytes, { stream: true }));
    take(decoder.decode());
    return { raw, items, events, parseErrors: reader.parseErrors };
  } catch (err) {
    return { raw, items, events, parseErrors: reader.parseErrors, error: err as Error };
  }
}

export function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

/** POSTs `body` and reads the whole SSE response. */
export async function postSse(url: string, body: unknown): Promise<SseResult & { status: number; headers: Headers }> {
  const res = await post(url, body);
  return { status: res.status, headers: res.headers, ...(await readSse(res.body)) };
}

/** The JSON payloads of every data event before the final `[DONE]`. */
export function payloads<T = Record<string, unknown>>(result: Pick<SseResult, 'events'>): T[] {
  return result.events.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d) as T);
}

/** The `choices[0].finish_reason` of each JSON event (skipping '[DONE]'). */
export function finishReasons(events: readonly string[]): Array<string | null> {
  return events
    .filter((d) => d !== '[DONE]')
    .map((d) => (JSON.parse(d) as { choices: Array<{ finish_reason: string | null }> }).choices[0]?.finish_reason ?? null);
}
