// zod → OpenAI error: the first issue becomes a 400 whose `param` names the field.
import type { z } from 'zod';
import { apiError } from '../errors.js';
import { paramOf } from './schemas.js';

export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw apiError('invalid_request', 'the request body must be a JSON object', null);
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const param = paramOf(issue.path);
  const missing = valueAt(body, issue.path) === undefined;
  const message = missing ? 'is required' : issue.message;
  throw apiError('invalid_request', param ? `${param}: ${message}` : message, param);
}

function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let node = body;
  for (const key of path) node = node == null ? undefined : (node as Record<PropertyKey, unknown>)[key];
  return node;
}
