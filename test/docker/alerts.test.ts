// The alerting rules an operator loads (docker/prometheus/alerts.yml): promtool accepts them,
// their unit tests (alerts.test.yml) pass, and they name only metrics kvserve exports.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse } from 'yaml';
import { needs } from '../helpers/binaries.js';
import { definedMetrics } from '../helpers/metrics.js';

const dir = fileURLToPath(new URL('../../docker/prometheus/', import.meta.url));
const promtool = (...args: string[]) => spawnSync('promtool', args, { cwd: dir, encoding: 'utf8' });

t.test('promtool check rules accepts alerts.yml', async (t) => {
  if (!needs(t, 'promtool')) return;
  const r = promtool('check', 'rules', 'alerts.yml');
  t.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});

t.test('promtool test rules: every alert fires when it should and only then', async (t) => {
  if (!needs(t, 'promtool')) return;
  const r = promtool('test', 'rules', 'alerts.test.yml');
  t.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const tests = parse(readFileSync(`${dir}alerts.test.yml`, 'utf8')) as {
    tests: Array<{ alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
  };
  const firing = new Set(tests.tests.flatMap((x) => x.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
  const rules = parse(readFileSync(`${dir}alerts.yml`, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  for (const rule of rules.groups.flatMap((g) => g.rules)) t.ok(firing.has(rule.alert), `${rule.alert} has a test in which it fires`);
});

t.test('the rules name only metrics kvserve exports', async (t) => {
  const exported = new Set((await definedMetrics().registry.getMetricsAsJSON()).map((m) => m.name));
  const rules = parse(readFileSync(`${dir}alerts.yml`, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  for (const rule of rules.groups.flatMap((g) => g.rules)) {
    for (const name of rule.expr.match(/\bkvserve_[a-z0-9_]+/g) ?? []) {
      t.ok(exported.has(name.replace(/_(bucket|sum|count)$/, '')), `${rule.alert}: ${name} is exported`);
    }
  }
});

t.test('prometheus.yml loads the rules', async (t) => {
  const config = parse(readFileSync(`${dir}prometheus.yml`, 'utf8')) as { rule_files?: string[] };
  t.strictSame(config.rule_files, ['alerts.yml']);
});
