// Every error the API can return, made once: HTTP status, OpenAI error `type` and `code`,
// Retry-After where a retry can succeed, and what it means (docs/api.md lists the catalog; a
// test keeps the two in step). Code throws `apiError(code, message, param)`; the error handler
// renders {"error":{"message","type","param","code"}} and never leaks internals on a 5xx.

import type { EngineErrorCode } from './core/scheduler/events.js';

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly type: string,
    readonly code: string | null,
    message: string,
    readonly param: string | null = null,
    /** Extra response headers, e.g. Retry-After. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface CatalogEntry {
  status: number;
  type: string;
  code: string | null;
  /** Seconds a client should wait before retrying (the Retry-After header), where a retry can succeed. */
  retryAfterS?: number;
  description: string;
}

export const catalog = {
  invalid_request: {
    status: 400,
    type: 'invalid_request_error',
    code: null,
    description: 'A body field is missing, of the wrong type or out of range; `param` names it.',
  },
  invalid_json: { status: 400, type: 'invalid_request_error', code: 'invalid_json', description: 'The body is not valid JSON.' },
  unsupported_media_type: { status: 415, type: 'invalid_request_error', code: 'unsupported_media_type', description: 'The body is not application/json.' },
  context_length_exceeded: {
    status: 400,
    type: 'invalid_request_error',
    code: 'context_length_exceeded',
    description: "Prompt tokens plus max_tokens exceed the model's context length; the message states both numbers.",
  },
  model_not_found: { status: 404, type: 'invalid_request_error', code: 'model_not_found', description: 'The `model` named is not the one this server serves.' },
  not_found: { status: 404, type: 'invalid_request_error', code: 'not_found', description: 'No such route.' },
  bad_request: {
    status: 400,
    type: 'invalid_request_error',
    code: 'bad_request',
    description: 'The HTTP request itself is malformed (e.g. a URL with bad percent-encoding); the connection may be closed.',
  },
  headers_too_large: {
    status: 431,
    type: 'invalid_request_error',
    code: 'headers_too_large',
    description: "The request's headers are larger than Node's limit (16 KiB); the connection is closed.",
  },
  receive_timeout: {
    status: 408,
    type: 'invalid_request_error',
    code: 'receive_timeout',
    description: 'The whole request (headers and body) did not arrive within `limits.receiveTimeoutMs`; the connection is closed.',
  },
  body_too_large: { status: 413, type: 'invalid_request_error', code: 'body_too_large', description: 'The request body is over `limits.bodyLimitBytes`.' },
  kv_budget_exceeded: {
    status: 400,
    type: 'invalid_request_error',
    code: 'kv_budget_exceeded',
    description: "The request's KV cache at full length (prompt + max_tokens) would exceed the whole KV budget.",
  },
  session_not_found: {
    status: 404,
    type: 'invalid_request_error',
    code: 'session_not_found',
    description: 'No session with that id (never created, expired or evicted).',
  },
  kv_cache_full: {
    status: 503,
    type: 'server_overloaded',
    code: 'kv_cache_full',
    retryAfterS: 1,
    description: 'Running requests hold the whole KV budget and none freed room within `kvCache.admissionTimeoutMs`; retry after `Retry-After` seconds.',
  },
  queue_full: {
    status: 429,
    type: 'server_overloaded',
    code: 'queue_full',
    retryAfterS: 1,
    description: 'Every batch slot is busy and `scheduler.maxQueued` requests already wait; refused at once, retry after `Retry-After` seconds.',
  },
  invalid_api_key: {
    status: 401,
    type: 'invalid_request_error',
    code: 'invalid_api_key',
    description: 'API keys are configured and the request has no `Authorization: Bearer <key>` header, or its key is not one of them.',
  },
  rate_limited: {
    status: 429,
    type: 'rate_limit_error',
    code: 'rate_limited',
    retryAfterS: 1,
    description: "The tenant already has its key file's `maxRequests` generations running or queued; refused at once, retry after `Retry-After` seconds.",
  },
  request_timeout: {
    status: 504,
    type: 'timeout_error',
    code: 'request_timeout',
    description:
      'The generation did not finish within `scheduler.requestTimeoutMs` of its arrival (queued or running); a stream that already started ends with this error event.',
  },
  not_ready: {
    status: 503,
    type: 'server_error',
    code: 'not_ready',
    retryAfterS: 1,
    description: 'The engine is not ready (starting, shutting down, or its worker stopped); retry after `Retry-After` seconds.',
  },
  engine_restarted: {
    status: 503,
    type: 'server_error',
    code: 'engine_restarted',
    retryAfterS: 1,
    description:
      'A worker thread of the engine failed while the request was in flight; the engine is being restarted. A stream that already started ends with this error event; retry after `Retry-After` seconds.',
  },
  internal: {
    status: 500,
    type: 'server_error',
    code: 'internal_error',
    description: 'An unexpected failure; details are in the server log, never in the response.',
  },
} as const satisfies Record<string, CatalogEntry>;

export type ErrorCode = keyof typeof catalog;

// The scheduler's failure codes are catalog codes: the HTTP layer renders them as they are.
true satisfies EngineErrorCode extends ErrorCode ? true : false;

export function apiError(code: ErrorCode, message: string, param: string | null = null): ApiError {
  const entry: CatalogEntry = catalog[code];
  const headers: Record<string, string> = entry.retryAfterS === undefined ? {} : { 'Retry-After': String(entry.retryAfterS) };
  return new ApiError(entry.status, entry.type, entry.code, message, param, headers);
}
