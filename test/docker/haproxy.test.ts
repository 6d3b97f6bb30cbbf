// The committed HAProxy configurations are what docker/haproxy/haproxy-config.ts generates
// (`npm run fleet:config`), so the compose and Kubernetes load balancers cannot drift from the
// one the fleet tests run; both route with the same frontend; and the real haproxy accepts
// both files as they are (replica names and the SRV record resolve at run time: init-addr none).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse } from 'yaml';
import { COMPOSE_HAPROXY, K8S_HAPROXY, haproxyConfig } from '../../docker/haproxy/haproxy-config.js';
import { needs } from '../helpers/binaries.js';

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
