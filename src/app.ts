// Builds the Fastify application: the app's plugins (services, request log, error rendering),
// then the routes. The engine is attached later (services.attach) so liveness answers while
// the model loads.
import { randomUUID } from 'node:crypto';
import cors from '@fastify/cors';
import { hostname } from 'node:os';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Config } from './config.js';
import errorHandler, { clientError, frameworkError } from './http/error-handler.js';
import requestLog from './http/request-log.js';
import services from './http/services.js';
import tenant from './http/tenant.js';
import type { BuildInfo } from './metrics/metrics.js';
import chat from './routes/chat.js';
import completions from './routes/completions.js';
import health from './routes/health.js';
import kv from './routes/kv.js';
import metrics from './routes/metrics.js';
import models from './routes/models.js';
import openapi, { collectRoutes } from './routes/openapi.js';
import playground from './routes/playground.js';
import sessions from './routes/sessions.js';
import tokenize from './routes/tokenize.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Unix seconds. */
    startedAt: number;
  }
}

export async function buildApp(config: Readonly<Config>, logger: FastifyBaseLogger, build: BuildInfo): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger,
    // kvserve writes its own line per request (http/request-log.ts) instead of Fastify's two.
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
    frameworkErrors: frameworkError,
    clientErrorHandler: clientError,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    return503OnClosing: true,
  });
  app.decorate('startedAt', Math.floor(Date.now() / 1000));
  // Fastify parses text/plain to a string; kvserve takes JSON only (415 for anything else).
  app.removeContentTypeParser('text/plain');

  // Only the listed origins; a preflight is answered before authentication (browsers send no
  // Authorization header with it), and the actual request then needs its key like any other.
  if (config.cors.origins.length > 0) {
    await app.register(cors, {
      origin: [...config.cors.origins],
      methods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
      allowedHeaders: ['Authorization', 'Content-Type', 'X-Request-Id'],
      exposedHeaders: ['X-Request-Id', 'Retry-After'],
      maxAge: 600,
    });
  }
  await app.register(services, { config, build });
  await app.register(requestLog);
  await app.register(errorHandler);
  // Every response names the replica that served it, so routing can be observed. Set on the
  // raw response: SSE streams write their head themselves. (Before authentication: a 401 has it too.)
  const instance = config.instanceId ?? hostname();
  app.addHook('onRequest', async (_request, reply) => {
    reply.raw.setHeader('x-kvserve-instance', instance);
  });
  await app.register(tenant, { config });

  const routes = collectRoutes(app);
  await app.register(health);
  await app.register(models);
  await app.register(completions);
  await app.register(chat);
  await app.register(tokenize);
  await app.register(sessions);
  await app.register(kv);
  await app.register(metrics);
  await app.register(openapi, { version: build.version, routes });
  await app.register(playground);
  return app;
}
