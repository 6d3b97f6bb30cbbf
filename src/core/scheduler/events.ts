// What the scheduler tells its owner about each request: `admitted` once it holds a batch slot
// and its KV room (never, if refused), text deltas, then exactly one `done`.
// Failures carry a code of the API's error catalog (src/errors.ts), which maps it onto an
// HTTP status; the core itself knows nothing of HTTP.
import type { TokenLogprob } from '../sampling/logprobs.js';
import type { Usage } from './sequence.js';

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

/** Why a request failed: the error catalog's codes the scheduler can give. */
export type EngineErrorCode =
  | 'kv_cache_full'
  | 'kv_budget_exceeded'
  | 'invalid_request'
  | 'queue_full'
  | 'request_timeout'
  | 'not_ready'
  | 'engine_restarted'
  | 'internal';

export type DoneEvent = {
  type: 'done';
  id: string;
  finishReason: FinishReason;
  text: string;
  usage: Usage;
  /** Time the request waited in the queue before it ran (absent: refused before running). */
  queueMs?: number;
  error?: string;
  errorCode?: EngineErrorCode;
  /** The last tokens' logprobs (requests with logprobs), and the prompt's if not sent yet. */
  logprobs?: TokenLogprob[];
  promptLogprobs?: TokenLogprob[];
};

/**
 * Text of one choice (`index`, set when the request has several). A request with n > 1 ends
 * each choice with a delta carrying its `finishReason`; its `done` then only sums the usage
 * (or carries the failure).
 */
export type DeltaEvent = {
  type: 'delta';
  id: string;
  text: string;
  index?: number;
  finishReason?: FinishReason;
  logprobs?: TokenLogprob[];
  promptLogprobs?: TokenLogprob[];
};

/**
 * `admitted`: the request left the queue and runs; no refusal can follow (only a finish, a
 * timeout or a failure). The HTTP layer opens an event stream only after it.
 */
export type EngineEvent = { type: 'admitted'; id: string } | DeltaEvent | DoneEvent;

export interface SchedulerLimits {
  /** Sequences running at once: the largest decode batch. */
  maxRunning: number;
  /** Requests waiting for a slot or KV room; one more is refused at once. */
  maxQueued: number;
  /** Prompt tokens prefilled per step, over all newcomers (also the chunk size). */
  maxPrefillTokensPerStep: number;
  /** A request still unfinished this long after it arrived ends with request_timeout. */
  requestTimeoutMs: number;
}
