// The committed HAProxy configurations are what docker/haproxy/haproxy-config.ts generates
// (`npm run fleet:config`), so the compose and Kubernetes load balancers cannot drift from the
// one the fleet tests run; both route with the same frontend; and the real haproxy accepts
// both files as they are (replica names and the SRV record resolve at run time: init-addr none).
// The routing itself runs in a real HAProxy in front of three stub replicas (routing, not
// inference, is the subject): a session's generations and its /v1/sessions/{id} calls meet.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse } from 'yaml';
import { COMPOSE_HAPROXY, K8S_HAPROXY, haproxyConfig } from '../../docker/haproxy/haproxy-config.js';
import { needs } from '../helpers/binaries.js';
import { freePort } from '../helpers/net.js';
import { waitFor } from '../helpers/poll.js';

const file = (path: string) => fileURLToPath(new URL(`../../docker/${path}`, import.meta.url));
const FILES = { 'haproxy/haproxy.cfg': COMPOSE_HAPROXY, 'k8s/haproxy.cfg': K8S_HAPROXY };

/** The lines of one section (`frontend kvserve`, `backend replicas` …), up to the next blank line. */
const section = (cfg: string, header: string) => cfg.slice(cfg.indexOf(`\n${header}\n`)).split('\n\n')[0] ?? '';

t.test('the committed configurations are what haproxy-config.ts generates (npm run fleet:config)', async (t) => {
  for (const [path, generated] of Object.entries(FILES)) t.equal(readFileSync(file(path), 'utf8'), generated, `docker/${path}`);
});

t.test('compose and Kubernetes route alike: the same frontend, the same balancing and checks', async (t) => {
  t.equal(section(K8S_HAPROXY, 'frontend kvserve'), section(COMPOSE_HAPROXY, 'frontend kvserve'));
  const backend = (cfg: string) =>
    section(cfg, 'backend replicas')
      .split('\n')
      .filter((l) => !/^\s*server(-template)? /.test(l));
  t.strictSame(backend(K8S_HAPROXY), backend(COMPOSE_HAPROXY));
  t.match(
    K8S_HAPROXY,
    /^ {2}server-template replica 10 _http\._tcp\.kvserve\.default\.svc\.cluster\.local$/m,
    'replicas from the SRV record of the headless Service',
  );
  t.match(K8S_HAPROXY, /^ {2}parse-resolv-conf$/m, "the pod's cluster DNS");
  t.throws(
    () => haproxyConfig({ bind: '*:8000', serverTemplate: { prefix: 'r', count: 2, srv: '_http._tcp.x' } }),
    /nameserver/,
    'a template without DNS is refused',
  );
});

t.test('haproxy -c accepts both committed files', async (t) => {
  if (!needs(t, 'haproxy')) return;
  for (const path of Object.keys(FILES)) {
    const check = spawnSync('haproxy', ['-c', '-f', file(path)], { encoding: 'utf8' });
    t.equal(check.status, 0, `docker/${path}: ${check.stdout}${check.stderr}`);
  }
});

t.test("the compose image runs the HAProxy version that checks it here (Debian's)", async (t) => {
  if (!needs(t, 'haproxy')) return;
  const version = /HA-?Proxy version (\d+\.\d+)/.exec(spawnSync('haproxy', ['-v'], { encoding: 'utf8' }).stdout)?.[1];
  const compose = parse(readFileSync(file('compose.fleet.yml'), 'utf8'), { merge: true }) as { services: { haproxy: { image: string } } };
  t.equal(compose.services.haproxy.image, `haproxy:${version}`);
});

t.test('a session meets one replica: X-Session-Id, body session_id, and /v1/sessions/{id} without a body', async (t) => {
  if (!needs(t, 'haproxy')) return;
  // Stub replicas: ready, and naming themselves as kvserve does.
  const stubs = await Promise.all(
    [1, 2, 3].map(
      (i) =>
        new Promise<ReturnType<typeof createServer>>((resolve) => {
          const server = createServer((req, res) => {
            req.resume();
            req.on('end', () => {
              res.setHeader('x-kvserve-instance', `replica${i}`);
              res.end('{}');
            });
          });
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  t.teardown(() => {
    for (const s of stubs) s.close();
  });
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-haproxy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'haproxy.cfg');
  const servers = stubs.map((s, i) => ({ name: `replica${i + 1}`, address: `127.0.0.1:${(s.address() as AddressInfo).port}` }));
  writeFileSync(cfg, haproxyConfig({ bind: `127.0.0.1:${port}`, servers, checkIntervalMs: 200 }));
  const haproxy = spawn('haproxy', ['-db', '-f', cfg], { stdio: 'ignore' });
  t.teardown(() => {
    haproxy.kill('SIGKILL');
  });
  const lb = `http://127.0.0.1:${port}`;
  const served = async (path: string, init: RequestInit = {}) => {
    const r = await fetch(`${lb}${path}`, init);
    await r.arrayBuffer();
    return r.headers.get('x-kvserve-instance');
  };
  // Up once every replica passed its health checks (rise 2): round robin then reaches all three.
  const upstreams = () => Promise.all(Array.from({ length: 6 }, () => served('/v1/models').catch(() => 'not listening yet')));
  await waitFor('three replicas up', async () => new Set(await upstreams()).size === 3, {
    timeoutMs: 10_000,
    intervalMs: 100,
  });
  const json = (body: unknown, headers: Record<string, string> = {}) => ({
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const homes = new Set<string | null>();
  for (const id of [...Array.from({ length: 10 }, (_, i) => `chat-${i}`), 'a b/c?x=1', 'jülia']) {
    const home = await served('/v1/completions', json({ session_id: id, prompt: `turn of ${id}` }));
    homes.add(home);
    t.equal(await served('/v1/chat/completions', json({ messages: [{ role: 'user', content: 'another prompt' }], session_id: id })), home, `${id}: chat, body`);
    // Header values travel as Latin-1: only ASCII ids hash there as they do in the UTF-8 body.
    if (/^[\x20-\x7e]+$/.test(id))
      t.equal(await served('/v1/completions', json({ prompt: 'x' }, { 'x-session-id': id })), home, `${id}: the X-Session-Id header`);
    const path = `/v1/sessions/${encodeURIComponent(id)}`;
    t.equal(await served(path), home, `${id}: GET ${path}`);
    t.equal(await served(path, { method: 'DELETE' }), home, `${id}: DELETE ${path}`);
  }
  t.ok(homes.size >= 2, `the sessions are spread over replicas (${[...homes].join(', ')})`);
});
