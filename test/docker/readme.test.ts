// The README's metrics reference is part of the interface: every metric the registry exports
// is documented with its type and labels, and nothing else is.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { README_FILE } from '../../docker/grafana/dashboard.js';
import { Metrics } from '../../src/metrics/metrics.js';

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
