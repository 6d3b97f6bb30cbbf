// GET / serves the playground bundle with its security headers; PLAYGROUND=false removes it.
// (The page itself, in a real browser: test/web/playground.test.ts.)
import { pino } from 'pino';
import t from 'tap';
import { buildApp } from '../../src/app.js';
import { readBuildInfo } from '../../src/build-info.js';
import { loadConfig } from '../../src/config.js';
import { buildWeb } from '../helpers/web.js';

buildWeb();
const app = async (env: Record<string, string> = {}) => {
  const a = await buildApp(loadConfig({ LOG_LEVEL: 'silent', ...env }), pino({ level: 'silent' }), readBuildInfo());
  t.teardown(() => a.close());
  return a;
};

t.test('GET / and its two files, with a CSP that allows no inline script or style', async (t) => {
  const a = await app();
  const page = await a.inject({ method: 'GET', url: '/' });
  t.equal(page.statusCode, 200);
  t.match(page.headers['content-type'], /^text\/html/);
  const csp = String(page.headers['content-security-policy']);
  for (const directive of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) t.match(csp, directive, directive);
  t.notMatch(csp, /unsafe-inline|unsafe-eval|\*/, 'nothing inline, evaluated or from anywhere');
  t.equal(page.headers['x-content-type-options'], 'nosniff');
  t.equal(page.headers['referrer-policy'], 'no-referrer');
  t.notMatch(page.body, /<script>|<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=/i, 'the HTML has no inline script, style or handler');
  t.notMatch(page.body, /https?:\/\//, 'nothing from another origin (no CDN)');
  for (const [url, type] of [
    ['/playground/app.js', /^text\/javascript/],
    ['/playground/app.css', /^text\/css/],
  ] as const) {
    const res = await a.inject({ method: 'GET', url });
    t.equal(res.statusCode, 200, url);
    t.match(res.headers['content-type'], type, `${url}: its type (nosniff needs it right)`);
    t.equal(res.headers['x-content-type-options'], 'nosniff');
    t.ok(page.body.includes(url), `the page loads ${url}`);
  }
});

t.test('PLAYGROUND=false: 404 for the page and its files, the API unchanged', async (t) => {
  const a = await app({ PLAYGROUND: 'false' });
  for (const url of ['/', '/playground/app.js', '/playground/app.css']) {
    const res = await a.inject({ method: 'GET', url });
    t.equal(res.statusCode, 404, url);
    t.equal(res.json().error.code, 'not_found');
  }
  t.equal((await a.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'the rest still answers');
});
