// The dashboard's shape, checked without Grafana: the committed JSON and docs/metrics.md's table are
// what `npm run dashboard` writes; ids are unique and the grid does not overlap; every panel has
// a data source and queries; the queries name only metrics kvserve exports; every panel the
// issue asks for is there. test/docker/prometheus.test.ts evaluates the queries themselves.
import { readFileSync } from 'node:fs';
import t from 'tap';
import {
  buildDashboard,
  DASHBOARD_FILE,
  DASHBOARD_UID,
  DATASOURCE,
  dashboardJson,
  panelsOf,
  docPanelTable,
  INSTANCE,
  METRICS_DOC,
  PROVISIONED_DATASOURCE_UID,
  panelTable,
} from '../../docker/grafana/dashboard.js';
import { definedMetrics } from '../helpers/metrics.js';

const dashboard = buildDashboard();
const committed = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Record<string, any>;

interface GridPanel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Array<{ refId: string; expr: string; datasource?: { uid: string } }>;
}
const panels = committed.panels as GridPanel[];

t.test('the committed JSON and the documented table are what `npm run dashboard` writes', async (t) => {
  t.equal(readFileSync(DASHBOARD_FILE, 'utf8'), dashboardJson(dashboard), 'docker/grafana/dashboards/kvserve.json is up to date (npm run dashboard)');
  t.equal(docPanelTable(readFileSync(METRICS_DOC, 'utf8')), panelTable(dashboard), "docs/metrics.md's panel table is up to date (npm run dashboard)");
});

t.test('a dashboard model Grafana loads', async (t) => {
  t.equal(committed.uid, DASHBOARD_UID);
  t.type(committed.title, 'string');
  t.type(committed.schemaVersion, 'number');
  t.ok(Array.isArray(committed.annotations?.list), 'annotations.list');
  t.ok(Array.isArray(committed.templating?.list), 'templating.list');
  const variables = new Map((committed.templating.list as Array<Record<string, any>>).map((v) => [v.name, v]));
  t.strictSame([...variables.keys()], ['datasource', 'instance'], 'two variables: $datasource and $instance');
  t.equal(variables.get('datasource')?.type, 'datasource');
  t.equal(variables.get('datasource')?.query, 'prometheus', 'any Prometheus');
  t.equal(variables.get('datasource')?.current?.value, PROVISIONED_DATASOURCE_UID, 'default: the provisioned one');
  t.equal(variables.get('instance')?.type, 'query');
  t.match(JSON.stringify(variables.get('instance')?.query), 'label_values(kvserve_build_info, instance)');
  t.equal(variables.get('instance')?.includeAll, true);
  t.equal(variables.get('instance')?.multi, true);
  t.ok(committed.time?.from && committed.time?.to, 'a time range');

  const ids = panels.map((p) => p.id);
  t.ok(
    ids.every((id) => Number.isInteger(id) && id > 0),
    'positive integer ids',
  );
  t.equal(new Set(ids).size, ids.length, 'unique ids');

  const cells = new Map<string, string>();
  for (const p of panels) {
    const { x, y, w, h } = p.gridPos ?? {};
    t.ok(
      [x, y, w, h].every((n) => Number.isInteger(n) && n! >= 0) && w! > 0 && h! > 0 && x! + w! <= 24,
      `${p.title}: gridPos ${JSON.stringify(p.gridPos)} inside 24 columns`,
    );
    for (let i = x!; i < x! + w!; i++) {
      for (let j = y!; j < y! + h!; j++) {
        const other = cells.get(`${i},${j}`);
        if (other) t.fail(`${p.title} overlaps ${other} at ${i},${j}`);
        cells.set(`${i},${j}`, p.title);
      }
    }
  }
});

t.test('every panel queries $datasource, every series selected by $instance', async (t) => {
  for (const p of panels) {
    if (p.type === 'row') {
      t.equal(p.targets, undefined, `row ${p.title}: no queries`);
      continue;
    }
    t.ok(['timeseries', 'gauge', 'stat'].includes(p.type), `${p.title}: a ${p.type} panel`);
    t.strictSame(p.datasource, DATASOURCE, `${p.title}: the $datasource variable`);
    t.ok((p.targets ?? []).length > 0, `${p.title}: has queries`);
    const refIds = (p.targets ?? []).map((q) => q.refId);
    t.equal(new Set(refIds).size, refIds.length, `${p.title}: unique refIds ${refIds}`);
    for (const q of p.targets ?? []) {
      t.ok(q.expr.trim() !== '', `${p.title}/${q.refId}: an expression`);
      t.equal(q.datasource?.uid, DATASOURCE.uid, `${p.title}/${q.refId}: the $datasource variable`);
      // Every metric name in the expression is followed by a selector naming $instance.
      for (const m of q.expr.matchAll(/\b((?:kvserve|process|nodejs)_[a-z0-9_]+)(\{[^}]*\})?/g)) {
        t.ok(m[2]?.includes(`instance=~"${INSTANCE}"`), `${p.title}/${q.refId}: ${m[1]} selected by $instance`);
      }
    }
  }
});

t.test('the queries name only metrics kvserve exports', async (t) => {
  const exported = new Set((await definedMetrics().registry.getMetricsAsJSON()).map((m) => m.name));
  const series = new Set(panelsOf(dashboard).flatMap((p) => (p.targets ?? []).flatMap((q) => q.expr.match(/\bkvserve_[a-z0-9_]+/g) ?? [])));
  t.ok(series.size > 20);
  for (const name of series) {
    const metric = exported.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    t.ok(exported.has(metric), `${name} is exported`);
  }
});

t.test('the panels the issue asks for are there', async (t) => {
  const titles = panelsOf(dashboard).map((p) => p.title);
  for (const title of [
    'Generated tokens/s',
    'Requests/s by status',
    'Time to first token',
    'Inter-token latency',
    'End-to-end latency',
    'Running and queued requests',
    'Batch size',
    'KV cache bytes',
    'KV cache use',
    'Cache hit ratio',
    'Prompt tokens/s: reused vs computed',
    'Evictions/s by reason',
    'Aborted and rejected requests/s',
    'Process memory',
  ]) {
    t.ok(titles.includes(title), title);
  }
  const exprs = (title: string) =>
    panelsOf(dashboard)
      .find((p) => p.title === title)
      ?.targets.map((q) => q.expr) ?? [];
  t.strictSame(
    exprs('Time to first token').map((e) => /histogram_quantile\(([\d.]+)/.exec(e)?.[1]),
    ['0.5', '0.95', '0.99'],
    'time to first token p50, p95, p99',
  );
  t.strictSame(
    exprs('Inter-token latency').map((e) => /histogram_quantile\(([\d.]+)/.exec(e)?.[1]),
    ['0.5', '0.99'],
    'inter-token latency p50, p99',
  );
  t.match(
    exprs('Cache hit ratio')[0],
    /^sum\(rate\(kvserve_kv_cache_lookups_total\{instance=~"\$instance",result="hit"\}\[\$__rate_interval\]\)\) \/ sum\(rate\(kvserve_kv_cache_lookups_total\{instance=~"\$instance"\}\[\$__rate_interval\]\)\)$/,
    'hit ratio from the lookup counters with rate()',
  );
  t.match(exprs('KV cache use')[0], /kvserve_kv_cache_bytes\{[^}]*\} \/ kvserve_kv_cache_capacity_bytes\{/, 'KV use as a percentage of capacity');
});
