// The benches' SSE reader for kvserve's (and OpenAI's) completion streams: parses each data
// payload as JSON, skips `: ping` comments and stops at [DONE]; an error event throws.
import type { Usage } from './server.js';

export interface CompletionChunk {
  choices?: { text?: string; finish_reason?: string | null }[];
  usage?: Usage | null;
  error?: { message: string };
}

/** Incremental: push() the stream's text as it arrives, get the complete events' payloads. */
export class SseParser {
  #buffer = '';
  /** True once [DONE] was read (anything after it is ignored). */
  done = false;

  push(text: string): CompletionChunk[] {
    const out: CompletionChunk[] = [];
    this.#buffer += text;
    for (let end = this.#buffer.indexOf('\n\n'); end >= 0 && !this.done; end = this.#buffer.indexOf('\n\n')) {
      const event = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue; // ": ping" heartbeats
        const data = line.slice(6);
        if (data === '[DONE]') {
          this.done = true;
          break;
        }
        const chunk = JSON.parse(data) as CompletionChunk;
        if (chunk.error) throw new Error(`stream error event: ${chunk.error.message}`);
        out.push(chunk);
      }
    }
    return out;
  }
}
