// The README's metrics reference and deploy section are part of the interface: every metric
// the registry exports is documented with its labels (and nothing else is), and the deploy
// section names the commands, the image's variables, the volumes and the stack's ports.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { README_FILE } from '../../docker/grafana/dashboard.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { parseDockerfile } from '../helpers/dockerfile.js';

const readme = readFileSync(README_FILE, 'utf8');
const section = (heading: string) => {
  const start = readme.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README.md has no '${heading}'`);
  const end = readme.indexOf('\n## ', start + heading.length + 1);
  return readme.slice(start, end < 0 ? undefined : end);
};

t.test('every metric is in the README with its type and labels, and only those', async (t) => {
  const registry = new Metrics().registry;
  const exported = await registry.getMetricsAsJSON();
  const rows = new Map<string, string[]>();
  for (const line of section('## Metrics').split('\n')) {
    const cells = line.split(/(?<!\\)\|/).map((c) => c.trim());
    const name = /^`(kvserve_[a-z0-9_]+)`$/.exec(cells[1] ?? '')?.[1];
    if (name) rows.set(name, cells.slice(2, -1));
  }
  for (const metric of exported) {
    const row = rows.get(metric.name);
    if (!t.ok(row, `${metric.name} is documented`)) continue;
    t.equal(row![0], metric.type, `${metric.name}: a ${metric.type}`);
    const labelNames = (registry.getSingleMetric(metric.name) as unknown as { labelNames: string[] }).labelNames;
    // "`route`, `status`" or "`reason`=`lru`\|`ttl`…": each comma-separated item starts with a label name.
    const documented = row![1]!.split(/,\s*/).flatMap((item) => /^`([a-z_]+)`/.exec(item)?.[1] ?? []);
    t.strictSame(documented, labelNames, `${metric.name}: labels ${labelNames.join(', ') || '(none)'}`);
    t.ok(row![2]!.length > 0, `${metric.name}: a meaning`);
  }
  const names = new Set(exported.map((m) => m.name));
  for (const name of rows.keys()) t.ok(names.has(name), `${name}: documented and exported`);
});

t.test('the deploy section covers building, running, the stack, volumes and variables', async (t) => {
  const deploy = section('## Deploy');
  for (const command of ['docker build -t kvserve .', 'docker run --rm -p 8080:8080', 'docker compose up']) t.match(deploy, command, command);
  t.match(deploy, /-v \S+:\S+/, 'a volume for another model');
  const image = parseDockerfile(readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8')).at(-1)!;
  for (const [name, value] of Object.entries(image.env)) t.match(deploy, `\`${name}=${value}\``, `the image's ${name}`);
  t.match(deploy, '[Configuration](#configuration)', 'points at the configuration table');
  for (const port of ['8080', '9090', '3000']) t.match(deploy, new RegExp(`\\| ${port} \\|`), `port ${port} in the services table`);
  for (const volume of ['prometheus-data', 'grafana-data']) t.match(deploy, volume, volume);
});
