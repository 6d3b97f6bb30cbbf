// The compose stack, read without a Docker engine: every mount points at a file of the
// repository, Prometheus scrapes the kvserve service on the port the image listens on, Grafana's
// data source is the default of the $datasource variable every dashboard query names, the dashboard provider loads the mounted
// directory, and the Grafana image is the version the dashboard's schema was built for.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse } from 'yaml';
import { buildDashboard, DASHBOARD_FILE, DATASOURCE, PROVISIONED_DATASOURCE_UID, panelsOf } from '../../docker/grafana/dashboard.js';
import { parseDockerfile } from '../helpers/dockerfile.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const composeDir = join(root, 'docker');
const yaml = (path: string) => parse(readFileSync(path, 'utf8')) as any;

interface Service {
  build?: string | { context: string };
  image?: string;
  ports?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  stop_grace_period?: string;
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
