// The benches' HTTP client for streamed completions: node:http with keep-alive sockets and the
// incremental SSE reader the tests use, not fetch. On a 2-core machine every client cycle is
// taken from the server being measured, and fetch's WHATWG streams cost about twice the CPU of
// node:http reading the same streams (docs/benchmarks.md).
import { Agent, request } from 'node:http';
import { SseReader } from '../../test/helpers/sse.js';
import type { Usage } from './server.js';

/** A completion chunk as the benches read it (kvserve's and OpenAI's shape). */
export interface CompletionChunk {
  choices?: { text?: string; finish_reason?: string | null }[];
  usage?: Usage | null;
  error?: { message: string };
}

/** Keep-alive, like fetch's default dispatcher: a closed loop of requests reuses its socket. */
const agent = new Agent({ keepAlive: true });

/**
 * POSTs `body` (JSON) to `url` and feeds the SSE response to `onChunks` as it arrives, with
 * the arrival time of the bytes that completed those chunks. Resolves at [DONE]; rejects on
 * a non-200 status (with the body), an error event, a stream that ends without [DONE], or
 * `signal`.
 */
export function postStream(url: string, body: unknown, onChunks: (chunks: CompletionChunk[], at: number) => void, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json' }, ...(signal ? { signal } : {}) }, (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let text = '';
        res.on('data', (s: string) => (text += s)).once('end', () => reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`)));
        return;
      }
      const parser = new SseReader();
      res.on('data', (text: string) => {
        const at = performance.now();
        try {
          const chunks: CompletionChunk[] = [];
          for (const item of parser.push(text)) {
            if (item.kind !== 'data' || item.data === '[DONE]') continue; // `: ping` heartbeats, the end
            const chunk = JSON.parse(item.data) as CompletionChunk;
            if (chunk.error) throw new Error(`stream error event: ${chunk.error.message}`);
            chunks.push(chunk);
          }
          if (chunks.length > 0) onChunks(chunks, at);
        } catch (err) {
          res.destroy();
          reject(err as Error);
        }
      });
      res.once('end', () => (parser.done ? resolve() : reject(new Error('stream ended without [DONE]'))));
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end(JSON.stringify(body));
  });
}
