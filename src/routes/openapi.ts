// GET /openapi.json — generated from the route table (every route the app registers, seen by
// an onRoute hook) and described from the same zod schemas that validate requests: a route added
// without a description still appears, so the document cannot miss one.
import type { FastifyInstance, RouteOptions } from 'fastify';
import { z } from 'zod';
import { catalog } from '../errors.js';
import * as s from '../http/schemas.js';

const json = (schema: z.ZodType) => ({ 'application/json': { schema: z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) } });
const errors = Object.fromEntries(
  [...new Set(Object.values(catalog).map((e) => e.status))].map((status) => [
    String(status),
    {
      description: Object.values(catalog)
        .filter((e) => e.status === status)
        .map((e) => e.description)
        .join(' '),
      content: json(s.errorResponse),
    },
  ]),
);
const generation = (summary: string, body: z.ZodType, response: z.ZodType) => ({
  post: {
    summary,
    requestBody: { required: true, content: json(body) },
    responses: {
      200: {
        description: 'The completion as JSON, or with `stream: true` an SSE stream of chunks ending in `data: [DONE]`.',
        content: { ...json(response), 'text/event-stream': { schema: { type: 'string' } } },
      },
      ...errors,
    },
  },
});

const param = (name: string, description: string) => ({ name, in: 'path', required: true, schema: { type: 'string' }, description });

/** Descriptions of the known routes, by "METHOD /path" (OpenAPI path syntax). */
const described: Record<string, object> = {
  'POST /v1/completions': generation('Text completion', s.completionRequest, s.completionResponse).post,
  'POST /v1/chat/completions': generation('Chat completion', s.chatRequest, s.chatResponse).post,
  'GET /v1/models': { summary: 'The served model', responses: { 200: { description: 'A list with one model.' } } },
  'GET /v1/models/{id}': {
    summary: 'The served model by id',
    parameters: [param('id', 'The model id.')],
    responses: { 200: { description: 'The model.' }, ...errors },
  },
  'GET /v1/sessions': {
    summary: "The caller's named KV-cache sessions, with their tier",
    responses: { 200: { description: '{object: list, data}' }, ...errors },
  },
  'GET /v1/sessions/{id}': {
    summary: 'One session',
    parameters: [param('id', 'The session id (`session_id` of the requests that made it).')],
    responses: { 200: { description: 'The session.' }, ...errors },
  },
  'DELETE /v1/sessions/{id}': {
    summary: 'Drops a session from every tier',
    parameters: [param('id', 'The session id.')],
    responses: { 200: { description: '{id, object, deleted: true}' }, ...errors },
  },
  'GET /v1/kv': {
    summary: "The KV cache in counts and sizes: the pool by kind and tier, reuse, evictions by reason, and the caller's sessions",
    responses: { 200: { description: 'Never token contents.', content: json(s.kvResponse) }, ...errors },
  },
  'GET /': {
    summary: 'The playground (HTML; PLAYGROUND=false turns it off)',
    responses: { 200: { description: 'The page.' }, 404: { description: 'Turned off.' } },
  },
  'GET /playground/app.js': {
    summary: "The playground's script",
    security: [],
    responses: { 200: { description: 'JavaScript.' }, 404: { description: 'Turned off.' } },
  },
  'GET /playground/app.css': {
    summary: "The playground's style sheet",
    security: [],
    responses: { 200: { description: 'CSS.' }, 404: { description: 'Turned off.' } },
  },
  'POST /tokenize': {
    summary: 'Text or messages to token ids',
    requestBody: { content: json(s.tokenizeRequest) },
    responses: { 200: { description: '{tokens, count, max_model_len}' }, ...errors },
  },
  'POST /detokenize': {
    summary: 'Token ids to text',
    requestBody: { content: json(s.detokenizeRequest) },
    responses: { 200: { description: '{prompt}' }, ...errors },
  },
  'GET /health': { summary: 'Liveness', security: [], responses: { 200: { description: 'The process serves HTTP.' } } },
  'GET /health/ready': {
    summary: 'Readiness',
    security: [],
    responses: { 200: { description: 'Model loaded, engine answering.' }, 503: { description: 'Not ready.' } },
  },
  'GET /metrics': { summary: 'Prometheus metrics', responses: { 200: { description: 'The text exposition format.' } } },
  'GET /openapi.json': { summary: 'This document', security: [], responses: { 200: { description: 'OpenAPI 3.1.' } } },
};

/** A route as the onRoute hook saw it. */
export interface RouteEntry {
  method: string;
  url: string;
}

/** Records every route registered after this call (call it on the root instance before the routes). */
export function collectRoutes(app: FastifyInstance): RouteEntry[] {
  const routes: RouteEntry[] = [];
  app.addHook('onRoute', (r: RouteOptions) => {
    for (const method of [r.method].flat()) if (method !== 'HEAD') routes.push({ method, url: r.url });
  });
  return routes;
}

export function openApiDocument(version: string, routes: readonly RouteEntry[]) {
  const paths: Record<string, Record<string, object>> = {};
  for (const { method, url } of routes) {
    const path = url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const key = `${method} ${path}`;
    const params = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => param(m[1]!, ''));
    const op = described[key] ?? { summary: key, ...(params.length > 0 ? { parameters: params } : {}), responses: { 200: { description: 'OK' }, ...errors } };
    paths[path] = { ...paths[path], [method.toLowerCase()]: op };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'kvserve', version, description: 'OpenAI-compatible text generation with a managed KV cache.' },
    // When API keys are configured every route needs one, except those that say `security: []`.
    components: {
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'An API key (API_KEYS_FILE or API_KEY); its tenant scopes sessions and cache.' },
      },
    },
    security: [{ bearerAuth: [] }],
    paths,
  };
}

export default async function openapi(app: FastifyInstance, opts: { version: string; routes: readonly RouteEntry[] }): Promise<void> {
  let doc: ReturnType<typeof openApiDocument> | undefined;
  app.get('/openapi.json', async () => {
    // Built at the first request, once every route is registered.
    doc ??= openApiDocument(opts.version, opts.routes);
    return doc;
  });
}
