// The Kubernetes manifests (docker/k8s/), read without a cluster: every document parses and is
// a well-formed object; each Service selects a Deployment's pods and targets a port they name;
// the kvserve ConfigMap plus the downward API's INSTANCE_ID is a configuration kvserve accepts;
// the probes answer 200 on a real kvserve started with that environment; the headless Service
// is the SRV record HAProxy's server-template resolves; HAProxy and Redis run as in compose.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse, parseAllDocuments } from 'yaml';
import { K8S_HAPROXY } from '../../docker/haproxy/haproxy-config.js';
import { ENV_VARS, loadConfig } from '../../src/config.js';
import { waitFor } from '../helpers/poll.js';
import { startServer } from '../helpers/server.js';

const path = (file: string) => fileURLToPath(new URL(`../../docker/${file}`, import.meta.url));

interface Probe {
  httpGet?: { path: string; port: string | number };
  tcpSocket?: { port: string | number };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  ports?: Array<{ name?: string; containerPort: number }>;
  env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; configMapKeyRef?: { name: string; key: string } } }>;
  envFrom?: Array<{ configMapRef?: { name: string } }>;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  spec?: any;
}

const kustomization = parse(readFileSync(path('k8s/kustomization.yaml'), 'utf8')) as {
  namespace: string;
  resources: string[];
  configMapGenerator: Array<{ name: string; files: string[] }>;
};
const objects: K8sObject[] = kustomization.resources.flatMap((file) =>
  parseAllDocuments(readFileSync(path(`k8s/${file}`), 'utf8')).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message}`);
    return doc.toJS() as K8sObject;
  }),
);
const find = (kind: string, name: string): K8sObject => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
};
const containerOf = (deployment: string): Container => find('Deployment', deployment).spec.template.spec.containers[0];
const compose = parse(readFileSync(path('compose.fleet.yml'), 'utf8'), { merge: true }) as { services: Record<string, { image: string; command?: string[] }> };

/** The bytes a Kubernetes quantity (`2Gi`, `512Mi`) names. */
const bytes = (q: string) => {
  const [, n, unit] = /^(\d+)(Mi|Gi)$/.exec(q) ?? [];
  return Number(n) * (unit === 'Gi' ? 2 ** 30 : unit === 'Mi' ? 2 ** 20 : Number.NaN);
};

t.test('every manifest parses into well-formed objects; the kustomization names files that exist', async (t) => {
  for (const file of [...kustomization.resources, ...kustomization.configMapGenerator.flatMap((g) => g.files)]) t.ok(existsSync(path(`k8s/${file}`)), file);
  t.strictSame(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
    'ConfigMap/kvserve-config',
    'Deployment/haproxy',
    'Deployment/kvserve',
    'Deployment/redis',
    'Service/haproxy',
    'Service/kvserve',
    'Service/redis',
  ]);
  for (const o of objects) {
    t.match(o.apiVersion, o.kind === 'Deployment' ? 'apps/v1' : 'v1', `${o.kind}/${o.metadata.name}: apiVersion`);
    if (o.kind === 'Deployment') {
      t.strictSame(o.spec.selector.matchLabels, o.spec.template.metadata.labels, `${o.metadata.name}: the selector matches its pods`);
      for (const c of o.spec.template.spec.containers as Container[])
        t.ok(c.resources?.requests && c.resources.limits?.memory, `${o.metadata.name}: requests and a memory limit`);
    }
    if (o.kind === 'Service') {
      const deployment = objects.find((d) => d.kind === 'Deployment' && JSON.stringify(d.spec.template.metadata.labels) === JSON.stringify(o.spec.selector));
      if (!t.ok(deployment, `Service ${o.metadata.name} selects a Deployment's pods`)) continue;
      const names = (deployment!.spec.template.spec.containers as Container[]).flatMap((c) => (c.ports ?? []).map((p) => p.name));
      for (const port of o.spec.ports)
        t.ok(names.includes(port.targetPort), `Service ${o.metadata.name}: targetPort ${port.targetPort} is a container port's name`);
    }
  }
});

t.test('kvserve: three replicas whose environment kvserve accepts, INSTANCE_ID the pod name', async (t) => {
  const deployment = find('Deployment', 'kvserve');
  t.equal(deployment.spec.replicas, 3);
  const c = containerOf('kvserve');
  const configMap = find('ConfigMap', c.envFrom?.[0]?.configMapRef?.name ?? '');
  const env = configMap.data ?? {};
  for (const name of [...Object.keys(env), ...(c.env ?? []).map((e) => e.name)]) t.ok(name in ENV_VARS, `${name} is a configuration variable`);
  t.strictSame(c.env, [{ name: 'INSTANCE_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }], 'INSTANCE_ID from the downward API');
  const config = loadConfig({ ...env, INSTANCE_ID: 'kvserve-5d8f7c9b4-x2x7q' });
  t.equal(config.instanceId, 'kvserve-5d8f7c9b4-x2x7q');
  t.equal(c.ports?.[0]?.containerPort, config.port, `the container port is the one kvserve listens on (${config.port})`);
  const redis = find('Service', 'redis');
  t.equal(config.kvCache.redisUrl, `redis://${redis.metadata.name}:${redis.spec.ports[0].port}`, 'KV_CACHE_REDIS_URL: the redis Service');
  t.equal(String(config.model.threads), c.resources?.limits?.cpu, 'ORT_THREADS is the CPU limit');
  t.ok(
    bytes(c.resources!.limits!.memory!) > config.kvCache.maxBytes + config.kvCache.compressedMaxBytes,
    'the memory limit holds the KV budget and its compressed tier',
  );
  t.ok(deployment.spec.template.spec.terminationGracePeriodSeconds * 1000 > config.shutdown.graceMs, 'the grace period outlasts the shutdown grace');
  t.equal(c.readinessProbe?.httpGet?.path, '/health/ready');
  t.equal(c.livenessProbe?.httpGet?.path, '/health');
  t.equal(c.startupProbe?.httpGet?.path, '/health');
  for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) t.equal(probe?.httpGet?.port, c.ports?.[0]?.name, 'probes name the http port');

  // The probes on a real kvserve with that environment (its own Redis is a fleet test's subject).
  const { KV_CACHE_REDIS_URL: _, ...local } = env;
  const server = await startServer({ env: { ...local, LOG_LEVEL: 'silent', INSTANCE_ID: 'kvserve-5d8f7c9b4-x2x7q' } });
  t.teardown(() => server.close());
  const ready = await waitFor('readiness', async () => {
    const r = await fetch(`${server.url}${c.readinessProbe!.httpGet!.path}`);
    return r.status === 200 && r;
  });
  t.equal(ready.headers.get('x-kvserve-instance'), 'kvserve-5d8f7c9b4-x2x7q', 'responses name the pod');
  t.equal((await fetch(`${server.url}${c.livenessProbe!.httpGet!.path}`)).status, 200, 'liveness');
});

t.test('the headless Service is the SRV record HAProxy resolves', async (t) => {
  const service = find('Service', 'kvserve');
  t.equal(service.spec.clusterIP, 'None', 'headless: one DNS record per ready pod');
  const port = service.spec.ports[0];
  t.equal(port.port, containerOf('kvserve').ports?.[0]?.containerPort);
  const srv = `_${port.name}._tcp.${service.metadata.name}.${kustomization.namespace}.svc.cluster.local`;
  t.match(K8S_HAPROXY, new RegExp(`^ {2}server-template \\S+ \\d+ ${srv.replaceAll('.', '\\.')}$`, 'm'), srv);
});

t.test('HAProxy: the generated config mounted where the image reads it, listening on the Service port', async (t) => {
  const c = containerOf('haproxy');
  t.equal(c.image, compose.services.haproxy!.image, 'the image compose runs');
  t.equal(find('Deployment', 'haproxy').spec.replicas, 1, 'one: two would fill their server slots in their own order');
  const volume = find('Deployment', 'haproxy').spec.template.spec.volumes.find((v: { name: string }) => v.name === c.volumeMounts?.[0]?.name);
  const generator = kustomization.configMapGenerator.find((g) => g.name === volume?.configMap?.name);
  t.strictSame(generator?.files, ['haproxy.cfg'], 'the ConfigMap generated from docker/k8s/haproxy.cfg');
  t.equal(readFileSync(path('k8s/haproxy.cfg'), 'utf8'), K8S_HAPROXY);
  t.equal(c.volumeMounts?.[0]?.mountPath, '/usr/local/etc/haproxy', 'as haproxy.cfg in the directory the image reads');
  const bind = Number(/^\s*bind \*:(\d+)$/m.exec(K8S_HAPROXY)?.[1]);
  t.equal(c.ports?.[0]?.containerPort, bind, `the container port is the bind port ${bind}`);
  t.equal(find('Service', 'haproxy').spec.ports[0].port, bind);
});

t.test("Redis: compose's image and arguments", async (t) => {
  const c = containerOf('redis');
  t.equal(c.image, compose.services.redis!.image);
  t.strictSame(c.args, compose.services.redis!.command!.slice(1), 'the arguments compose passes redis-server (the image prepends it)');
  t.ok(bytes(c.resources!.limits!.memory!) > 2 ** 30, 'a memory limit above maxmemory (1gb)');
});
