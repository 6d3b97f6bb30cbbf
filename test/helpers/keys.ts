// API key files for tests: written to a temporary directory, removed on teardown.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';

export const digestOf = (key: string): string => createHash('sha256').update(key).digest('hex');

/** Writes `content` (an object as JSON, a string as-is) to a key file; returns its path and a rewrite. */
export function keyFile(t: Test, content: unknown): { path: string; write(content: unknown): void } {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-keys-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'keys.json');
  const write = (c: unknown) => writeFileSync(path, typeof c === 'string' ? c : JSON.stringify(c));
  write(content);
  return { path, write };
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
