// One request over node:http, whatever it answers: its status and headers, and either the
// JSON body (a refusal) or the SSE stream read to its end — data events parsed, whether any
// carried text, and the error events. For tests that fire many requests at once (fetch's
// default dispatcher limits connections per origin; this uses an agent without a limit).
import { Agent, request } from 'node:http';
import { SseReader } from './sse.js';

export const unlimited = new Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });

export interface Outcome {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The JSON body of a non-stream answer (a refusal). */
  json: unknown;
  /** Data events of an event stream (parsed JSON; '[DONE]' not included). */
  events: Array<Record<string, any>>;
  /** Text chunks received before the stream ended (or an error event came). */
  textChunks: number;
  /** Error events ({"error":…}) inside the stream, and whether text came before each. */
  errorEvents: Array<{ afterText: boolean; error: Record<string, unknown> }>;
  /** The stream ended with [DONE]. */
  done: boolean;
}

/**
 * POSTs `body` to `url` and reads the whole answer. `onEvent` sees each data event as it
 * arrives (a test can act mid-stream).
 */
export function requestOutcome(
  url: string,
  body: unknown,
  onEvent?: (event: Record<string, any>) => void,
  headers: Record<string, string> = {},
): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent: unlimited, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      res.setEncoding('utf8');
      const out: Outcome = { status: res.statusCode ?? 0, headers: res.headers, json: undefined, events: [], textChunks: 0, errorEvents: [], done: false };
      const sse = /^text\/event-stream/.test(String(res.headers['content-type']));
      const reader = new SseReader();
      let raw = '';
      res.on('data', (text: string) => {
        if (!sse) {
          raw += text;
          return;
        }
        for (const item of reader.push(text)) {
          if (item.kind !== 'data') continue;
          if (item.data === '[DONE]') {
            out.done = true;
            continue;
          }
          const event = JSON.parse(item.data) as Record<string, any>;
          out.events.push(event);
          if (event.error) out.errorEvents.push({ afterText: out.textChunks > 0, error: event.error });
          else if (event.choices?.some((c: any) => (c.text ?? c.delta?.content ?? '') !== '')) out.textChunks++;
          onEvent?.(event);
        }
      });
      res.once('end', () => {
        if (!sse) out.json = raw === '' ? undefined : JSON.parse(raw);
        resolve(out);
      });
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end(JSON.stringify(body));
  });
}
