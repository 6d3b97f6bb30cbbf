// The benches' SSE reader for kvserve's (and OpenAI's) completion streams: yields each data
// payload as parsed JSON, skips `: ping` comments and stops at [DONE]; an error event throws.
import type { Usage } from './server.js';

export interface CompletionChunk {
  choices?: { text?: string; finish_reason?: string | null }[];
  usage?: Usage | null;
  error?: { message: string };
}

export async function* sseChunks(body: ReadableStream<Uint8Array>): AsyncGenerator<CompletionChunk, void, undefined> {
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const bytes of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(bytes, { stream: true });
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue; // ": ping" heartbeats
        const data = line.slice(6);
        if (data === '[DONE]') return;
        const chunk = JSON.parse(data) as CompletionChunk;
        if (chunk.error) throw new Error(`stream error event: ${chunk.error.message}`);
        yield chunk;
      }
    }
  }
}
