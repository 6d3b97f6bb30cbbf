// Every failure answers in OpenAI's error shape from the catalog (src/errors.ts): errors thrown
// by routes, Fastify's own (body too large, bad JSON, unknown route), and connection-level
// errors answered on the raw socket before any request exists.
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import fp from 'fastify-plugin';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ApiError, apiError } from '../errors.js';

/** Fastify's and Node's errors as catalog errors; anything unexpected is an internal error. */
export function toApiError(err: FastifyError | ApiError | Error): ApiError {
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

/**
 * Connection-level errors (Node's HTTP parser failed, the headers were too large, the request
 * took too long to arrive): Fastify's clientErrorHandler option.
 */
export function clientError(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Duplex): void {
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

/** Errors raised before a route runs (a URL Fastify cannot route): Fastify's frameworkErrors option. */
export function frameworkError(err: Error, _request: unknown, reply: FastifyReply): void {
  const apiErr = apiError('bad_request', `the URL is not valid: ${err.message}`);
  void reply.code(apiErr.status).send(apiErr.toBody());
}

export default fp(
  async (app: FastifyInstance) => {
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
  },
  { name: 'kvserve-errors', fastify: '5.x' },
);
