// Reads a text/event-stream body incrementally, calling back on each data event as it arrives
// (so a test can act mid-stream), and reports how the stream ended.
import { createParser } from 'eventsource-parser';

export interface StreamOutcome {
  /** The data of every event, in order (the last is '[DONE]' when the stream completed). */
  events: string[];
  /** Set when reading failed (the connection was reset or aborted). */
  error?: Error;
}

export async function readEvents(body: AsyncIterable<Uint8Array> | null, onEvent?: (data: string, index: number) => void): Promise<StreamOutcome> {
  const events: string[] = [];
  const parser = createParser({
    onEvent: (e) => {
      events.push(e.data);
      onEvent?.(e.data, events.length - 1);
    },
  });
  const decoder = new TextDecoder();
  try {
    if (body) for await (const bytes of body) parser.feed(decoder.decode(bytes, { stream: true }));
    parser.feed(decoder.decode());
    return { events };
  } catch (err) {
    return { events, error: err as Error };
  }
}

/** The `choices[0].finish_reason` of each JSON event (skipping '[DONE]'). */
export function finishReasons(events: readonly string[]): Array<string | null> {
  return events
    .filter((d) => d !== '[DONE]')
    .map((d) => (JSON.parse(d) as { choices: Array<{ finish_reason: string | null }> }).choices[0]?.finish_reason ?? null);
}
