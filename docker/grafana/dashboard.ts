// The kvserve Grafana dashboard as code, typed by Grafana's foundation SDK (the schema of
// Grafana 11.6, the version docker/compose.yml runs). `npm run dashboard` writes it to
// docker/grafana/dashboards/kvserve.json, which Grafana provisions, and its panel table into
// docs/metrics.md; test/docker/prometheus.test.ts evaluates every query against a real
// Prometheus. Two variables make it importable anywhere: $datasource (any Prometheus) and
// $instance (one replica, several, or all).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as common from '@grafana/grafana-foundation-sdk/common';
import {
  AnnotationQueryBuilder,
  type Dashboard,
  DashboardBuilder,
  DashboardCursorSync,
  DatasourceVariableBuilder,
  QueryVariableBuilder,
  RowBuilder,
  ThresholdsConfigBuilder,
  ThresholdsMode,
  VariableRefresh,
} from '@grafana/grafana-foundation-sdk/dashboard';
import * as gauge from '@grafana/grafana-foundation-sdk/gauge';
import { DataqueryBuilder } from '@grafana/grafana-foundation-sdk/prometheus';
import * as timeseries from '@grafana/grafana-foundation-sdk/timeseries';

/** The provisioned Prometheus data source (docker/grafana/provisioning/datasources): $datasource's default. */
export const PROVISIONED_DATASOURCE_UID = 'kvserve-prometheus';
/** What every panel and query names: the $datasource variable. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a template literal.
export const DATASOURCE = { type: 'prometheus', uid: '${datasource}' } as const;
export const DASHBOARD_UID = 'kvserve';

/**
 * Grafana's rate() window: max(step + one scrape interval, four scrape intervals), so a rate
 * always spans enough samples.
 */
export const RATE_INTERVAL = '$__rate_interval';
/** The $instance variable: every series is selected by it (its "All" is the regex .+). */
export const INSTANCE = '$instance';

/** `metric{instance=~"$instance", …labels}`: every query reads only the chosen instances. */
const m = (metric: string, labels = ''): string => `${metric}{instance=~"${INSTANCE}"${labels ? `,${labels}` : ''}}`;

interface Query {
  legend: string;
  expr: string;
}

const q = (legend: string, expr: string): Query => ({ legend, expr });
const rate = (series: string) => `rate(${series}[${RATE_INTERVAL}])`;
const quantiles = (histogram: string, ...qs: number[]): Query[] =>
  qs.map((x) => q(`p${Math.round(x * 100)}`, `histogram_quantile(${x}, sum by (le) (${rate(m(`${histogram}_bucket`))}))`));

function withTargets<P extends timeseries.PanelBuilder | gauge.PanelBuilder>(panel: P, queries: Query[]): P {
  queries.forEach(({ legend, expr }, i) => {
    panel.withTarget(
      new DataqueryBuilder()
        .datasource(DATASOURCE)
        .refId(String.fromCharCode(65 + i))
        .expr(expr)
        .legendFormat(legend)
        .range(),
    );
  });
  return panel;
}

interface GraphOptions {
  unit: string;
  max?: number;
  stacked?: boolean;
}

function graph(title: string, description: string, { unit, max, stacked = false }: GraphOptions, queries: Query[]): timeseries.PanelBuilder {
  const panel = new timeseries.PanelBuilder()
    .title(title)
    .description(description)
    .datasource(DATASOURCE)
    .unit(unit)
    .min(0)
    .fillOpacity(stacked ? 40 : 10)
    .legend(new common.VizLegendOptionsBuilder().showLegend(true).displayMode(common.LegendDisplayMode.List).placement(common.LegendPlacement.Bottom).calcs([]))
    .tooltip(new common.VizTooltipOptionsBuilder().mode(common.TooltipDisplayMode.Multi).sort(common.SortOrder.Descending));
  if (max !== undefined) panel.max(max);
  if (stacked) panel.stacking(new common.StackingConfigBuilder().mode(common.StackingMode.Normal));
  return withTargets(panel, queries);
}

function percentGauge(title: string, description: string, queries: Query[]): gauge.PanelBuilder {
  const panel = new gauge.PanelBuilder()
    .title(title)
    .description(description)
    .datasource(DATASOURCE)
    .unit('percent')
    .min(0)
    .max(100)
    .thresholds(
      new ThresholdsConfigBuilder().mode(ThresholdsMode.Absolute).steps([
        { value: null, color: 'green' },
        { value: 80, color: 'orange' },
        { value: 95, color: 'red' },
      ]),
    );
  return withTargets(panel, queries);
}

/** Builds the dashboard model, the JSON Grafana loads. */
export function buildDashboard(): Dashboard {
  const dashboard = new DashboardBuilder('kvserve')
    .uid(DASHBOARD_UID)
    .description('kvserve: throughput, latency, batching, the KV cache as a managed resource, and the process.')
    .tags(['kvserve', 'llm', 'kv-cache'])
    .editable()
    .tooltip(DashboardCursorSync.Crosshair)
    .time({ from: 'now-30m', to: 'now' })
    .refresh('10s')
    .timezone('browser')
    // What Grafana puts in every dashboard it saves: its own annotations.
    .annotation(
      new AnnotationQueryBuilder()
        .name('Annotations & Alerts')
        .datasource({ type: 'grafana', uid: '-- Grafana --' })
        .builtIn(1)
        .enable(true)
        .hide(true)
        .iconColor('rgba(0, 211, 255, 1)')
        .type('dashboard'),
    )
    .withVariable(
      new DatasourceVariableBuilder('datasource').label('Data source').type('prometheus').current({ text: 'Prometheus', value: PROVISIONED_DATASOURCE_UID }),
    )
    .withVariable(
      new QueryVariableBuilder('instance')
        .label('Instance')
        .datasource(DATASOURCE)
        .query({ query: 'label_values(kvserve_build_info, instance)', refId: 'instances' })
        .refresh(VariableRefresh.OnTimeRangeChanged)
        .multi(true)
        .includeAll(true)
        .allValue('.+')
        .current({ text: 'All', value: '$__all' }),
    )

    .withRow(new RowBuilder('Traffic'))
    .withPanel(
      graph('Generated tokens/s', 'Tokens generated per second, all requests together.', { unit: 'short' }, [
        q('generated', `sum(${rate(m('kvserve_generated_tokens_total'))})`),
      ]),
    )
    .withPanel(
      graph(
        'Requests/s by status',
        'API requests per second by HTTP status (499: the client left before the response ended); scrapes and health checks left out.',
        { unit: 'reqps', stacked: true },
        [q('{{status}}', `sum by (status) (${rate(m('kvserve_requests_total', 'route!~"/metrics|/health.*"'))})`)],
      ),
    )
    .withPanel(
      graph(
        'Finished generations/s by reason',
        'Generations per second by finish reason: stop (end of sequence or a stop string), length (max_tokens), abort, error.',
        { unit: 'reqps', stacked: true },
        [q('{{reason}}', `sum by (reason) (${rate(m('kvserve_request_finish_total'))})`)],
      ),
    )
    .withPanel(
      graph(
        'Aborted and rejected requests/s',
        'Generations aborted (client gone, shutdown), and generations refused before running by reason (kv_cache_full, kv_budget_exceeded).',
        { unit: 'reqps' },
        [
          q('aborted', `sum(${rate(m('kvserve_requests_aborted_total'))})`),
          q('rejected: {{reason}}', `sum by (reason) (${rate(m('kvserve_requests_rejected_total'))})`),
        ],
      ),
    )

    .withRow(new RowBuilder('Latency'))
    .withPanel(
      graph(
        'Time to first token',
        'From request arrival to the first generated text: queueing, prefill and the first decode step.',
        { unit: 's' },
        quantiles('kvserve_time_to_first_token_seconds', 0.5, 0.95, 0.99),
      ),
    )
    .withPanel(
      graph(
        'Inter-token latency',
        'Between successive text deltas of one request: a decode step as the client sees it.',
        { unit: 's' },
        quantiles('kvserve_inter_token_latency_seconds', 0.5, 0.99),
      ),
    )
    .withPanel(
      graph(
        'End-to-end latency',
        'From request arrival to the end of the response, generation requests only.',
        { unit: 's' },
        quantiles('kvserve_request_duration_seconds', 0.5, 0.95, 0.99),
      ),
    )
    .withPanel(
      graph(
        'Queue time',
        'How long admitted generations waited for KV room before they ran.',
        { unit: 's' },
        quantiles('kvserve_queue_time_seconds', 0.5, 0.99),
      ),
    )

    .withRow(new RowBuilder('Engine'))
    .withPanel(
      graph('Running and queued requests', 'Generations running in the engine, and waiting for admission.', { unit: 'short' }, [
        q('running', `sum(${m('kvserve_requests_running')})`),
        q('queued', `sum(${m('kvserve_requests_queued')})`),
      ]),
    )
    .withPanel(
      // The mean, not quantiles: interpolating within buckets turns a batch of always 1 into "p99 = 0.99".
      graph('Batch size', 'Mean number of sequences advanced together by one decode step (continuous batching).', { unit: 'short' }, [
        q('mean', `sum(${rate(m('kvserve_batch_size_sum'))}) / sum(${rate(m('kvserve_batch_size_count'))})`),
      ]),
    )
    .withPanel(
      graph(
        'Step duration',
        'One scheduler step: the batched decode plus any prefill chunks run with it.',
        { unit: 's' },
        quantiles('kvserve_step_duration_seconds', 0.5, 0.99),
      ),
    )
    .withPanel(
      graph(
        'Engine GC pauses',
        'Garbage-collection pauses of the engine thread: p99 of all kinds (a pause stalls every running stream), and seconds paused per second by kind.',
        { unit: 's' },
        [
          q('p99', `histogram_quantile(0.99, sum by (le) (${rate(m('kvserve_engine_gc_duration_seconds_bucket'))}))`),
          q('paused s/s {{kind}}', `sum by (kind) (${rate(m('kvserve_engine_gc_duration_seconds_sum'))})`),
        ],
      ),
    )

    .withRow(new RowBuilder('KV cache'))
    .withPanel(
      graph('KV cache bytes', 'Bytes of K/V held by the pool (running, session and prefix caches) against its budget, per instance.', { unit: 'bytes' }, [
        q('in use {{instance}}', m('kvserve_kv_cache_bytes')),
        q('capacity {{instance}}', m('kvserve_kv_cache_capacity_bytes')),
      ]),
    )
    .withPanel(
      percentGauge(
        'KV cache use',
        'K/V bytes held as a share of the budget, per instance. Near 100% the pool evicts session and prefix caches, and requests wait for room or are refused (kv_cache_full).',
        [q('{{instance}}', `100 * ${m('kvserve_kv_cache_bytes')} / ${m('kvserve_kv_cache_capacity_bytes')}`)],
      ),
    )
    .withPanel(
      graph(
        'Cache hit ratio',
        'Share of admission lookups that found every reusable prompt token cached (hit), and that found at least a prefix (hit or partial).',
        { unit: 'percentunit', max: 1 },
        [
          q('hit', `sum(${rate(m('kvserve_kv_cache_lookups_total', 'result="hit"'))}) / sum(${rate(m('kvserve_kv_cache_lookups_total'))})`),
          q('hit or partial', `sum(${rate(m('kvserve_kv_cache_lookups_total', 'result!="miss"'))}) / sum(${rate(m('kvserve_kv_cache_lookups_total'))})`),
        ],
      ),
    )
    .withPanel(
      graph(
        'Prompt tokens/s: reused vs computed',
        'Prompt tokens whose K/V came from the cache, against those prefilled by the model.',
        { unit: 'short', stacked: true },
        [q('reused', `sum(${rate(m('kvserve_kv_cache_reused_tokens_total'))})`), q('computed', `sum(${rate(m('kvserve_kv_cache_computed_tokens_total'))})`)],
      ),
    )
    .withPanel(
      graph(
        'Evictions/s by reason',
        'Pool entries evicted per second: lru (budget pressure), ttl (idle session), deleted (by a user).',
        { unit: 'ops', stacked: true },
        [q('{{reason}}', `sum by (reason) (${rate(m('kvserve_kv_cache_evictions_total'))})`)],
      ),
    )
    .withPanel(
      graph('Evicted bytes/s by reason', 'K/V bytes freed by evictions per second.', { unit: 'Bps', stacked: true }, [
        q('{{reason}}', `sum by (reason) (${rate(m('kvserve_kv_cache_evicted_bytes_total'))})`),
      ]),
    )
    .withPanel(
      graph('KV cache entries', 'Pool entries by kind (prefix = blocks), and those pinned by running requests.', { unit: 'short' }, [
        q('{{kind}}', `sum by (kind) (${m('kvserve_kv_cache_entries')})`),
        q('pinned', `sum(${m('kvserve_kv_cache_pinned_entries')})`),
      ]),
    )

    .withRow(new RowBuilder('KV cache tiers'))
    .withPanel(
      graph(
        'Bytes by tier',
        'K/V bytes each tier holds against its budget: ram (the pool), compressed (evicted caches in RAM, int8 or float16), disk (KV_CACHE_DIR, kept across restarts).',
        { unit: 'bytes' },
        [
          q('{{tier}}', `sum by (tier) (${m('kvserve_kv_cache_tier_bytes')})`),
          q('capacity {{tier}}', `sum by (tier) (${m('kvserve_kv_cache_tier_capacity_bytes')})`),
        ],
      ),
    )
    .withPanel(
      graph(
        'Blocks served by tier/s',
        'Prefix blocks (and sessions) reused per second, by the tier they were in when their request arrived.',
        { unit: 'ops', stacked: true },
        [q('{{tier}}', `sum by (tier) (${rate(m('kvserve_kv_cache_tier_hits_total'))})`)],
      ),
    )
    .withPanel(
      graph(
        'Demotions and promotions/s',
        'Entries moved down a tier on eviction (from → to), entries dropped instead, and entries brought back to RAM before a request was admitted.',
        { unit: 'ops' },
        [
          q('down {{from}}→{{to}}', `sum by (from, to) (${rate(m('kvserve_kv_cache_demotions_total'))})`),
          q('dropped', `sum(${rate(m('kvserve_kv_cache_demotions_dropped_total'))})`),
          q('up from {{from}}', `sum by (from) (${rate(m('kvserve_kv_cache_promotions_total'))})`),
        ],
      ),
    )
    .withPanel(
      graph(
        'Disk tier: writes and rejected files',
        "p99 time to write one entry file (off the step loop), and files never served per second by reason (another model's, damaged, cut short, unreadable).",
        { unit: 's' },
        [
          q('write p99', `histogram_quantile(0.99, sum by (le) (${rate(m('kvserve_kv_cache_disk_write_seconds_bucket'))}))`),
          q('rejected {{reason}}', `sum by (reason) (${rate(m('kvserve_kv_cache_disk_rejected_total'))})`),
        ],
      ),
    )

    // A fleet (docs/deployment.md#a-fleet): how the load balancer spreads the work, how well
    // its routing keeps each replica's cache useful, and the shared tier in Redis.
    .withRow(new RowBuilder('Fleet'))
    .withPanel(
      graph(
        'Requests/s by instance',
        'Generation requests per second each replica served: how the load balancer spreads the traffic.',
        { unit: 'reqps', stacked: true },
        [q('{{instance}}', `sum by (instance) (${rate(m('kvserve_requests_total', 'route=~"/v1/(chat/)?completions"'))})`)],
      ),
    )
    .withPanel(
      graph(
        'Prompt tokens reused by instance',
        "Share of each replica's prompt tokens whose K/V came from a cache (its own tiers or Redis) rather than prefill: cache-aware routing keeps it high.",
        { unit: 'percentunit', max: 1 },
        [
          q(
            '{{instance}}',
            `sum by (instance) (${rate(m('kvserve_kv_cache_reused_tokens_total'))}) / (sum by (instance) (${rate(m('kvserve_kv_cache_reused_tokens_total'))}) + sum by (instance) (${rate(m('kvserve_kv_cache_computed_tokens_total'))}))`,
          ),
        ],
      ),
    )
    .withPanel(
      graph(
        'Shared tier (Redis): bytes/s',
        'Entry bytes each second published to Redis (sent) and fetched from it on a local miss (received).',
        { unit: 'Bps' },
        [q('{{direction}}', `sum by (direction) (${rate(m('kvserve_kv_cache_remote_bytes_total'))})`)],
      ),
    )
    .withPanel(
      graph(
        'Shared tier (Redis): connection and errors',
        'Whether each replica is connected to Redis (1) or not (0: down, or no KV_CACHE_REDIS_URL), and failed or timed-out calls per second by op. A failed lookup is a miss, never an error response.',
        { unit: 'short' },
        [
          q('connected {{instance}}', m('kvserve_kv_cache_remote_up')),
          q('errors/s {{op}}', `sum by (op) (${rate(m('kvserve_kv_cache_remote_errors_total'))})`),
        ],
      ),
    )

    .withRow(new RowBuilder('Process'))
    .withPanel(
      graph(
        'Process memory',
        "The process's resident set (the model's weights, the K/V tensors and onnxruntime's buffers count here), and the V8 heap in use of the HTTP thread and of the engine thread, per instance.",
        { unit: 'bytes' },
        [
          q('resident {{instance}}', m('process_resident_memory_bytes')),
          q('HTTP heap used {{instance}}', m('nodejs_heap_size_used_bytes')),
          q('engine heap used {{instance}}', m('kvserve_engine_heap_used_bytes')),
        ],
      ),
    )
    .withPanel(
      graph('CPU', 'CPU time in cores, all threads (HTTP and the engine worker), per instance.', { unit: 'short' }, [
        q('{{instance}}', rate(m('process_cpu_seconds_total'))),
      ]),
    )
    .withPanel(
      graph('Event-loop lag', "The HTTP thread's event-loop lag p99 (inference runs in the worker, so this should stay small), per instance.", { unit: 's' }, [
        q('{{instance}}', m('nodejs_eventloop_lag_p99_seconds')),
      ]),
    )
    .build();

  // Ids in layout order, rows included (the SDK leaves them unset).
  for (const [i, panel] of (dashboard.panels ?? []).entries()) panel.id = i + 1;
  return dashboard;
}

/** The file Grafana provisions, and the page that documents it. */
export const DASHBOARD_FILE = fileURLToPath(new URL('dashboards/kvserve.json', import.meta.url));
export const METRICS_DOC = fileURLToPath(new URL('../../docs/metrics.md', import.meta.url));
const DOC_BEGIN = '<!-- dashboard panels: generated by `npm run dashboard` from docker/grafana/dashboard.ts -->';
const DOC_END = '<!-- end of dashboard panels -->';

export const dashboardJson = (dashboard: Dashboard) => `${JSON.stringify(dashboard, null, 2)}\n`;

/** The panel and query fields the README and the tests read. */
export interface PanelQueries {
  type: string;
  title: string;
  description: string;
  targets: Array<{ refId: string; expr: string; legendFormat: string }>;
}

export const panelsOf = (dashboard: Dashboard) => (dashboard.panels ?? []) as unknown as PanelQueries[];

const cell = (text: string) => text.replaceAll('|', '\\|');

/** The documented table of panels: title, what it shows, and the PromQL of each query. */
export function panelTable(dashboard: Dashboard): string {
  const lines = ['| panel | shows | PromQL (legend: query) |', '|---|---|---|'];
  for (const panel of panelsOf(dashboard)) {
    if (panel.type === 'row') {
      lines.push(`| **${cell(panel.title)}** | | |`);
      continue;
    }
    const queries = panel.targets.map((t) => `${cell(t.legendFormat)}: \`${cell(t.expr)}\``).join('<br>');
    lines.push(`| ${cell(panel.title)} | ${cell(panel.description)} | ${queries} |`);
  }
  return `${DOC_BEGIN}\n\n${lines.join('\n')}\n\n${DOC_END}`;
}

/** The page's generated block (markers included), or undefined if it has none. */
export function docPanelTable(doc: string): string | undefined {
  const begin = doc.indexOf(DOC_BEGIN);
  const end = doc.indexOf(DOC_END);
  return begin < 0 || end < begin ? undefined : doc.slice(begin, end + DOC_END.length);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dashboard = buildDashboard();
  writeFileSync(DASHBOARD_FILE, dashboardJson(dashboard));
  const doc = readFileSync(METRICS_DOC, 'utf8');
  const block = docPanelTable(doc);
  if (block === undefined) throw new Error(`docs/metrics.md has no '${DOC_BEGIN}' … '${DOC_END}' block`);
  writeFileSync(
    METRICS_DOC,
    doc.replace(block, () => panelTable(dashboard)),
  );
  process.stdout.write(`wrote ${DASHBOARD_FILE} and the panel table of docs/metrics.md\n`);
}
