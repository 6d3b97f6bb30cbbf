// GET / — the browser playground and KV panel: three files esbuild bundles at build time
// (web/build.mjs → dist/web), served from memory with a strict CSP. PLAYGROUND=false: 404.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { projectRoot } from '../config.js';
import { apiError } from '../errors.js';

/** Where `npm run build` puts the bundle (the same path from src/ under tsx and from dist/). */
export const WEB_DIR = join(projectRoot, 'dist/web');

const FILES = [
  { url: '/', file: 'index.html', type: 'text/html; charset=utf-8' },
  { url: '/playground/app.js', file: 'app.js', type: 'text/javascript; charset=utf-8' },
  { url: '/playground/app.css', file: 'app.css', type: 'text/css; charset=utf-8' },
] as const;

// No inline script or style anywhere: the page's own files and same-origin API calls only.
const HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  // Rebuilt with the service: revalidate rather than serve a stale bundle after an upgrade.
  'cache-control': 'no-cache',
};

export default async function playground(app: FastifyInstance, opts: { dir?: string } = {}): Promise<void> {
  if (!app.services.config.playground.enabled) return;
  const dir = opts.dir ?? WEB_DIR;
  for (const { url, file, type } of FILES) {
    // Read once at start: the bundle is fixed for the process's life and tiny (tens of KB).
    let body: Buffer | undefined;
    try {
      body = readFileSync(join(dir, file));
    } catch {
      app.log.warn({ file: join(dir, file) }, 'playground file missing: run npm run build');
    }
    app.get(url, async (_request, reply) => {
      if (!body) throw apiError('not_found', `the playground is not built (${file} missing): run npm run build`);
      return reply.headers(HEADERS).type(type).send(body);
    });
  }
}
