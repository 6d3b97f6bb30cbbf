// Builds the Fastify application: error catalog rendering, request logging, and the routes.
// The engine is attached later (services.attach) so liveness answers while the model loads.
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Config } from './config.js';
import type { FinishReason } from './core/generation/sequence.js';
import { ApiError, apiError } from './errors.js';
import { Services } from './http/services.js';
import chat from './routes/chat.js';
import completions from './routes/completions.js';
import health from './routes/health.js';
import models from './routes/models.js';
import metrics from './routes/metrics.js';
import openapi from './routes/openapi.js';
import sessions from './routes/sessions.js';
import tokenize from './routes/tokenize.js';

export interface GenerationStats {
  startedAt: number;
  promptTokens?: number;
  completionTokens?: number;
  ttftMs?: number;
  cachedTokens?: number;
  finishReason?: FinishReason;
  /** Set by streaming responses, which bypass Fastify's reply. */
  status?: number;
  /** The request's log line and counters are written once. */
  finished?: boolean;
}

/**
 * One log line and the request counter per request, however it ended — including clients
 * that left before a response (Fastify's onResponse never runs for those). Prompt text never
 * appears here.
 */
export function finishRequest(request: Pick<FastifyRequest, 'generation' | 'routeOptions' | 'server' | 'log' | 'url' | 'method'>, replyStatus: number): void {
  const g = request.generation;
  if (g.finished) return;
  g.finished = true;
  const route = request.routeOptions.url;
  const status = g.status ?? replyStatus;
  // Unmatched URLs share one label value: client-chosen paths must not explode cardinality.
  request.server.services.metrics.requests.inc({ route: route ?? 'unmatched', status });
  request.log.info(
    {
      route: route ?? request.url,
      method: request.method,
      status,
      promptTokens: g.promptTokens,
      cachedTokens: g.cachedTokens,
      completionTokens: g.completionTokens,
      finishReason: g.finishReason,
      ttftMs: g.ttftMs === undefined ? undefined : Math.round(g.ttftMs * 10) / 10,
      durationMs: Math.round((performance.now() - g.startedAt) * 10) / 10,
    },
    'request',
  );
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
    /** Unix seconds. */
    startedAt: number;
  }
  interface FastifyRequest {
    generation: GenerationStats;
  }
}

export const VERSION = '0.1.0';

/**
 * Connection-level errors, answered on the raw socket before any request exists (Node's
 * HTTP parser failed, the headers were too large, the request took too long to arrive).
 */
function clientError(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) return;
  const apiErr =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? apiError('receive_timeout', 'the request did not arrive in time')
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? apiError('headers_too_large', 'the request headers are too large')
        : apiError('bad_request', 'the request is not valid HTTP/1.1');
  this.log.debug({ err }, 'client error');
  const body = JSON.stringify(apiErr.toBody());
  socket.end(
    [
      `HTTP/1.1 ${apiErr.status} ${STATUS_CODES[apiErr.status]}`,
      'Connection: close',
      'Content-Type: application/json; charset=utf-8',
      `Content-Length: ${Buffer.byteLength(body)}`,
      '',
      body,
    ].join('\r\n'),
  );
}

function toApiError(err: FastifyError | ApiError | Error): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as FastifyError;
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return apiError('body_too_large', 'the request body is larger than the configured limit');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return apiError('unsupported_media_type', 'Content-Type must be application/json');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return apiError('invalid_json', `the body is not valid JSON: ${e.message}`);
  }
  if (e instanceof SyntaxError || (e.statusCode === 400 && /JSON/i.test(e.message))) {
    return apiError('invalid_json', `the body is not valid JSON: ${e.message}`);
  }
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
    return new ApiError(e.statusCode, 'invalid_request_error', null, e.message);
  }
  return apiError('internal', 'internal server error');
}

export async function buildApp(config: Readonly<Config>, logger: FastifyBaseLogger): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger,
    // kvserve writes its own line per request (finishRequest) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.limits.bodyLimitBytes,
    // Fastify's default is no limit: a client sending a body byte by byte (or never) would
    // hold its connection forever.
    requestTimeout: config.limits.receiveTimeoutMs,
    http: {
      // Node checks the timeouts on this period (default 30 s: up to 30 s late), and leaves a
      // request whose headers arrived unchecked unless headersTimeout ≤ requestTimeout.
      connectionsCheckingInterval: Math.min(1000, config.limits.receiveTimeoutMs),
      headersTimeout: config.limits.receiveTimeoutMs,
      requestTimeout: config.limits.receiveTimeoutMs,
    },
    // A JSON key named __proto__ or constructor.prototype is dropped, like any unknown field,
    // instead of failing the body as invalid JSON (it is valid JSON).
    onProtoPoisoning: 'remove',
    onConstructorPoisoning: 'remove',
    routerOptions: {
      // Session ids may be 256 characters (sessionId in src/http/schemas.ts); the router's
      // default of 100 made longer ones unreachable by URL.
      maxParamLength: 1024,
    },
    // Errors raised before a route runs get the same OpenAI-style body as the routes' own.
    frameworkErrors: (err, _request, reply) => {
      const apiErr = apiError('bad_request', `the URL is not valid: ${err.message}`);
      void (reply as FastifyReply).code(apiErr.status).send(apiErr.toBody());
    },
    clientErrorHandler: clientError,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    return503OnClosing: true,
  });
  app.decorate('services', new Services(config));
  app.decorate('startedAt', Math.floor(Date.now() / 1000));
  app.decorateRequest('generation', null as unknown as GenerationStats);

  app.addHook('onRequest', async (request, reply) => {
    request.generation = { startedAt: performance.now() };
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => finishRequest(request, reply.statusCode));
  // Fastify parses text/plain to a string; kvserve takes JSON only (415 for anything else).
  app.removeContentTypeParser('text/plain');

  app.setErrorHandler((err: FastifyError | ApiError, request, reply) => {
    const apiErr = toApiError(err);
    // An expected refusal (not ready, timed out, cache full) is a line, not a stack trace.
    if (apiErr.code === 'internal_error') request.log.error({ err }, 'request failed');
    else if (apiErr.status >= 500) request.log.warn({ code: apiErr.code, message: apiErr.message }, 'request refused');
    if (reply.sent || reply.raw.headersSent) return;
    return reply.code(apiErr.status).headers(apiErr.headers).send(apiErr.toBody());
  });
  app.setNotFoundHandler((request, reply) => {
    const err = apiError('not_found', `no route ${request.method} ${request.url}`);
    return reply.code(err.status).send(err.toBody());
  });

  await app.register(health);
  await app.register(models);
  await app.register(completions);
  await app.register(chat);
  await app.register(tokenize);
  await app.register(sessions);
  await app.register(metrics);
  await app.register(openapi, { version: VERSION });
  return app;
}
