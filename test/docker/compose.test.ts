// The compose stacks, read without a Docker engine: every mount points at a file of the
// repository, Prometheus scrapes the kvserve service on the port the image listens on, Grafana's
// data source is the default of the $datasource variable every dashboard query names, the dashboard provider loads the mounted
// directory, and the Grafana image is the version the dashboard's schema was built for. The
// fleet (compose.fleet.yml): every replica's environment is a configuration kvserve accepts,
// HAProxy's servers and Prometheus's targets are the replica services, and Redis starts with
// the compose file's own arguments (a real redis-server).
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse } from 'yaml';
import { buildDashboard, DASHBOARD_FILE, DATASOURCE, PROVISIONED_DATASOURCE_UID, panelsOf } from '../../docker/grafana/dashboard.js';
import { COMPOSE_HAPROXY } from '../../docker/haproxy/haproxy-config.js';
import { ENV_VARS, loadConfig } from '../../src/config.js';
import { needs } from '../helpers/binaries.js';
import { parseDockerfile } from '../helpers/dockerfile.js';
import { freePort } from '../helpers/net.js';
import { waitFor } from '../helpers/poll.js';
import { promtoolCheckConfig } from '../helpers/prometheus.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const composeDir = join(root, 'docker');
// merge: compose files may share a service's settings through `<<: *anchor`.
const yaml = (path: string) => parse(readFileSync(path, 'utf8'), { merge: true }) as any;

interface Service {
  build?: string | { context: string };
  image?: string;
  ports?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  stop_grace_period?: string;
  command?: string[];
  healthcheck?: { test: string[]; interval: string; timeout: string; start_period: string; retries: number };
  depends_on?: string[];
}
const compose = yaml(join(composeDir, 'compose.yml')) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
const { kvserve, prometheus, grafana } = compose.services;

/** `source:target[:mode]` of a service's volumes, sources resolved against the compose file's directory. */
function mounts(service: Service | undefined): Array<{ source: string; target: string; bind: boolean; mode?: string }> {
  return (service?.volumes ?? []).map((v) => {
    const [source, target, mode] = v.split(':') as [string, string, string?];
    const bind = source.startsWith('.') || source.startsWith('/');
    return { source: bind ? resolve(composeDir, source) : source, target, bind, ...(mode ? { mode } : {}) };
  });
}

const mountOf = (service: Service | undefined, target: string) => mounts(service).find((m) => m.target === target);
const seconds = (duration: string) => Number(/^(\d+)s$/.exec(duration)?.[1] ?? NaN);

t.test('three services: kvserve, prometheus, grafana', async (t) => {
  t.strictSame(Object.keys(compose.services).sort(), ['grafana', 'kvserve', 'prometheus']);
  for (const [name, service] of Object.entries(compose.services)) {
    for (const m of mounts(service)) {
      if (m.bind) t.ok(existsSync(m.source), `${name}: mount source ${m.source} exists`);
      else t.ok(compose.volumes && m.source in compose.volumes, `${name}: named volume ${m.source} is declared`);
    }
  }
});

t.test('kvserve is built from the repository and listens where it is published', async (t) => {
  const context = resolve(composeDir, typeof kvserve?.build === 'string' ? kvserve.build : (kvserve?.build?.context ?? ''));
  t.equal(context, resolve(root), 'build context: the repository root');
  t.ok(existsSync(join(context, 'Dockerfile')), 'with its Dockerfile');
  const image = parseDockerfile(readFileSync(join(context, 'Dockerfile'), 'utf8')).at(-1)!;
  t.strictSame(kvserve?.ports, [`${image.env.PORT}:${image.env.PORT}`], `publishes the image's PORT ${image.env.PORT}`);
  const graceMs = (JSON.parse(readFileSync(join(root, 'config/default.json'), 'utf8')) as { shutdown: { graceMs: number } }).shutdown.graceMs;
  t.ok(
    seconds(kvserve?.stop_grace_period ?? '') * 1000 > graceMs,
    `stop_grace_period ${kvserve?.stop_grace_period} outlasts the shutdown grace (${graceMs} ms)`,
  );
});

t.test('Prometheus scrapes the kvserve service with the shipped config', async (t) => {
  t.match(prometheus?.image, /^prom\/prometheus:v\d+\.\d+\.\d+$/, 'a pinned prom/prometheus image');
  t.strictSame(prometheus?.ports, ['9090:9090']);
  const config = mountOf(prometheus, '/etc/prometheus/prometheus.yml'); // the image's default --config.file
  t.equal(config?.source, join(composeDir, 'prometheus/prometheus.yml'), 'docker/prometheus/prometheus.yml is the config');
  t.ok(mountOf(prometheus, '/prometheus'), 'its storage on a volume');
  const scrape = yaml(config!.source) as {
    global: { scrape_interval: string };
    scrape_configs: Array<{ job_name: string; metrics_path?: string; static_configs: Array<{ targets: string[] }> }>;
  };
  t.equal(scrape.scrape_configs.length, 1);
  const job = scrape.scrape_configs[0]!;
  t.equal(job.metrics_path ?? '/metrics', '/metrics');
  const port = kvserve?.ports?.[0]?.split(':')[1];
  t.strictSame(
    job.static_configs.flatMap((s) => s.targets),
    [`kvserve:${port}`],
    'the target is the compose service name and its container port',
  );
  t.ok(
    seconds(scrape.global.scrape_interval) >= 1 && seconds(scrape.global.scrape_interval) <= 15,
    `a sensible scrape interval (${scrape.global.scrape_interval})`,
  );
});

t.test('Grafana provisions the data source and the dashboard, and opens on it', async (t) => {
  const sdk = JSON.parse(readFileSync(join(root, 'node_modules/@grafana/grafana-foundation-sdk/package.json'), 'utf8')) as { version: string };
  const schema = /^(\d+\.\d+)\./.exec(sdk.version)?.[1];
  t.match(
    grafana?.image,
    new RegExp(`^grafana/grafana:${schema?.replace('.', '\\.')}\\.\\d+$`),
    `the Grafana version whose schema the SDK (${sdk.version}) builds`,
  );
  t.strictSame(grafana?.ports, ['3000:3000']);

  const provisioning = mountOf(grafana, '/etc/grafana/provisioning');
  t.equal(provisioning?.source, join(composeDir, 'grafana/provisioning'));
  const datasourceFiles = readdirSync(join(provisioning!.source, 'datasources'));
  t.strictSame(datasourceFiles, ['prometheus.yml'], 'one data source file');
  const { datasources } = yaml(join(provisioning!.source, 'datasources/prometheus.yml')) as { datasources: Array<Record<string, any>> };
  t.equal(datasources.length, 1);
  const ds = datasources[0]!;
  t.equal(ds.type, 'prometheus');
  t.equal(ds.url, `http://prometheus:${prometheus?.ports?.[0]?.split(':')[1]}`, 'the prometheus service on its port');
  const scrapeInterval = (yaml(join(composeDir, 'prometheus/prometheus.yml')) as { global: { scrape_interval: string } }).global.scrape_interval;
  t.equal(ds.jsonData?.timeInterval, scrapeInterval, "the data source's scrape interval is Prometheus's ($__rate_interval derives from it)");
  const uids = new Set(panelsOf(buildDashboard()).flatMap((p) => (p.type === 'row' ? [] : [(p as unknown as { datasource: { uid: string } }).datasource.uid])));
  t.strictSame([...uids], [DATASOURCE.uid], 'every panel names the $datasource variable');
  const variable = (buildDashboard().templating?.list ?? []).find((v) => v.name === 'datasource');
  t.equal((variable?.current as { value?: string } | undefined)?.value, ds.uid, `whose default is the provisioned uid ${ds.uid}`);
  t.equal(ds.uid, PROVISIONED_DATASOURCE_UID);

  const dashboards = mountOf(grafana, '/etc/grafana/dashboards');
  t.equal(dashboards?.source, join(composeDir, 'grafana/dashboards'));
  t.equal(join(dashboards!.source, 'kvserve.json'), DASHBOARD_FILE, 'the mounted directory holds the generated dashboard');
  const { providers } = yaml(join(provisioning!.source, 'dashboards/kvserve.yml')) as { providers: Array<Record<string, any>> };
  t.equal(providers.length, 1);
  t.equal(providers[0]!.type, 'file');
  t.equal(providers[0]!.options?.path, dashboards!.target, 'the provider loads the mounted dashboards directory');
  t.ok(statSync(DASHBOARD_FILE).isFile());

  const env = grafana?.environment ?? {};
  t.equal(env.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH, `${dashboards!.target}/kvserve.json`, 'the home page is the kvserve dashboard');
  t.equal(env.GF_AUTH_ANONYMOUS_ENABLED, 'true', 'anonymous viewers');
  t.equal(env.GF_AUTH_ANONYMOUS_ORG_ROLE, 'Viewer', 'who may only view');
  t.ok(env.GF_SECURITY_ADMIN_PASSWORD, 'the admin password is set from the environment');
  t.ok(mountOf(grafana, '/var/lib/grafana'), "Grafana's data on a volume");
});

// ---- docker/compose.fleet.yml ----

const fleet = yaml(join(composeDir, 'compose.fleet.yml')) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
const REPLICAS = ['replica1', 'replica2', 'replica3'];
const image = parseDockerfile(readFileSync(join(root, 'Dockerfile'), 'utf8')).at(-1)!;

t.test('the fleet: three replicas, haproxy, redis, prometheus, grafana; every mount exists', async (t) => {
  t.strictSame(Object.keys(fleet.services).sort(), ['grafana', 'haproxy', 'prometheus', 'redis', ...REPLICAS]);
  for (const [name, service] of Object.entries(fleet.services)) {
    t.ok(service.image || service.build, `${name}: an image or a build`);
    for (const m of mounts(service)) {
      if (m.bind) t.ok(existsSync(m.source), `${name}: mount source ${m.source} exists`);
      else t.ok(fleet.volumes && m.source in fleet.volumes, `${name}: named volume ${m.source} is declared`);
      if (m.bind) t.equal(m.mode, 'ro', `${name}: ${m.target} read-only`);
    }
    for (const dep of service.depends_on ?? []) t.ok(dep in fleet.services, `${name} depends on the service ${dep}`);
  }
});

t.test('each replica: built from the repository, a configuration kvserve accepts, with its own instance id and the shared Redis', async (t) => {
  const graceMs = (JSON.parse(readFileSync(join(root, 'config/default.json'), 'utf8')) as { shutdown: { graceMs: number } }).shutdown.graceMs;
  const [redisHost, redisPort] = ['redis', '6379'];
  for (const name of REPLICAS) {
    const replica = fleet.services[name]!;
    t.equal(
      resolve(composeDir, typeof replica.build === 'string' ? replica.build : (replica.build?.context ?? '')),
      resolve(root),
      `${name}: built from the root`,
    );
    t.equal(replica.image, kvserve?.image, `${name}: the image compose.yml builds`);
    const env = replica.environment ?? {};
    for (const variable of Object.keys(env)) t.ok(variable in ENV_VARS, `${name}: ${variable} is a configuration variable`);
    // The image's own environment under the compose file's: what the process would read.
    const config = loadConfig({ ...image.env, MODEL_DIR: undefined, ...env });
    t.equal(config.instanceId, name, `${name}: INSTANCE_ID is the service name (x-kvserve-instance)`);
    t.equal(config.host, '0.0.0.0', `${name}: listens on every interface`);
    t.equal(config.kvCache.redisUrl, `redis://${redisHost}:${redisPort}`, `${name}: the redis service on its port`);
    t.equal(replica.ports, undefined, `${name}: reached through the load balancer, not published`);
    t.ok(seconds(replica.stop_grace_period ?? '') * 1000 > graceMs, `${name}: stop_grace_period outlasts the shutdown grace`);
    const check = replica.healthcheck;
    t.strictSame(check?.test, ['CMD', ...image.healthcheck!.cmd], `${name}: the image's HEALTHCHECK command (readiness)`);
    t.match(check?.test.join(' '), '/health/ready');
    for (const [option, key] of [
      ['interval', 'interval'],
      ['timeout', 'timeout'],
      ['start-period', 'start_period'],
    ] as const)
      t.equal(check?.[key], image.healthcheck!.options[option], `${name}: healthcheck ${key}`);
    t.equal(String(check?.retries), image.healthcheck!.options.retries);
  }
});

t.test("haproxy: the generated configuration, publishing its bind port, its servers the replicas on the image's port", async (t) => {
  const { haproxy } = fleet.services;
  t.match(haproxy?.image, /^haproxy:2\.\d+$/, 'the official HAProxy 2.x image');
  const cfg = mountOf(haproxy, '/usr/local/etc/haproxy/haproxy.cfg'); // the image's default config
  t.equal(cfg?.source, join(composeDir, 'haproxy/haproxy.cfg'));
  t.equal(readFileSync(cfg!.source, 'utf8'), COMPOSE_HAPROXY, 'what haproxy-config.ts generates');
  const bind = /^\s*bind \*:(\d+)$/m.exec(COMPOSE_HAPROXY)?.[1];
  t.strictSame(haproxy?.ports, [`${bind}:${bind}`], `publishes the bind port ${bind}`);
  const servers = [...COMPOSE_HAPROXY.matchAll(/^\s*server (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]);
  t.strictSame(
    servers,
    REPLICAS.map((r) => [r, `${r}:${image.env.PORT}`]),
    'one server per replica service, on the port it listens on',
  );
  t.match(COMPOSE_HAPROXY, /nameserver dns 127\.0\.0\.11:53/, "resolved by Docker's embedded DNS");
  t.strictSame([...(haproxy?.depends_on ?? [])].sort(), REPLICAS);
});

t.test('prometheus: the single-node config and rules, scraping every replica', async (t) => {
  const { prometheus: fleetPrometheus } = fleet.services;
  t.equal(fleetPrometheus?.image, prometheus?.image, 'the image compose.yml runs');
  t.strictSame(fleetPrometheus?.ports, prometheus?.ports);
  const config = mountOf(fleetPrometheus, '/etc/prometheus/prometheus.yml');
  t.equal(config?.source, join(composeDir, 'prometheus/prometheus.fleet.yml'));
  t.strictSame(mountOf(fleetPrometheus, '/etc/prometheus/alerts.yml'), mountOf(prometheus, '/etc/prometheus/alerts.yml'), 'the same alerting rules');
  t.ok(mountOf(fleetPrometheus, '/prometheus'), 'its storage on a volume');
  const single = yaml(join(composeDir, 'prometheus/prometheus.yml'));
  const scrape = yaml(config!.source);
  t.strictSame(
    scrape.scrape_configs[0].static_configs.flatMap((s: { targets: string[] }) => s.targets),
    REPLICAS.map((r) => `${r}:${image.env.PORT}`),
    'every replica service on its port',
  );
  // Everything else as on a single node: intervals, rules, job name (the alerts select job="kvserve").
  single.scrape_configs[0].static_configs = scrape.scrape_configs[0].static_configs;
  t.strictSame(scrape, single, 'only the targets differ from prometheus.yml');
  if (!needs(t, 'promtool')) return;
  const check = promtoolCheckConfig(config!.source);
  t.equal(check.status, 0, check.output);
});

t.test("grafana: the single node's, provisioned the same way", async (t) => {
  t.strictSame(fleet.services.grafana, grafana, "identical to compose.yml's grafana service");
  t.strictSame(fleet.volumes, compose.volumes);
});

t.test("redis: a real redis-server accepts the compose file's arguments and bounds itself as documented", async (t) => {
  const { redis } = fleet.services;
  t.match(redis?.image, /^redis:7(\.\d+)*$/, 'Redis 7');
  const command = redis?.command ?? [];
  t.equal(command[0], 'redis-server');
  if (!needs(t, 'redis-server', 'redis-cli')) return;
  const port = await freePort();
  const server = spawn('redis-server', [...command.slice(1), '--port', String(port), '--bind', '127.0.0.1'], { stdio: 'ignore' });
  t.teardown(() => {
    server.kill('SIGKILL');
  });
  const cli = async (...args: string[]) =>
    new Promise<string>((resolve) => {
      const p = spawn('redis-cli', ['-p', String(port), ...args]);
      let out = '';
      p.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      p.on('close', () => resolve(out));
    });
  await waitFor('redis-server to answer', async () => (await cli('PING')).trim() === 'PONG', { timeoutMs: 10_000, intervalMs: 100 });
  // redis-cli prints the key's name, then its value, on lines of their own.
  const get = async (key: string) => (await cli('CONFIG', 'GET', key)).split('\n')[1];
  t.equal(await get('maxmemory'), String(1024 ** 3), 'maxmemory 1gb');
  t.equal(await get('maxmemory-policy'), 'allkeys-lru', 'evicts any key, least recently used first');
  t.equal(await get('save'), '', 'no snapshots');
  t.equal(await get('appendonly'), 'no', 'no append-only file');
});
