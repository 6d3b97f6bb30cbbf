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
  const issue = explain(result.error.issues[0]!);
  const param = paramOf(issue.path);
  const missing = valueAt(body, issue.path) === undefined;
  const message = missing ? 'is required' : issue.message;
  throw apiError('invalid_request', param ? `${param}: ${message}` : message, param);
}

/**
 * A value that matched none of a union's shapes gets zod's bare "Invalid input"; when one
 * shape took the value's type (an array for `stop`, say) its own complaint says more ("at
 * most 16 items") and names the element at fault, so that one is reported.
 */
function explain(issue: z.core.$ZodIssue): { path: PropertyKey[]; message: string } {
  if (issue.code !== 'invalid_union') return issue;
  const typed = issue.errors.map((branch) => branch[0]).filter((i) => i !== undefined && !(i.code === 'invalid_type' && i.path.length === 0));
  if (typed.length !== 1) return issue;
  const inner = explain(typed[0]!);
  return { path: [...issue.path, ...inner.path], message: inner.message };
}

function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let node = body;
  for (const key of path) node = node == null ? undefined : (node as Record<PropertyKey, unknown>)[key];
  return node;
}
