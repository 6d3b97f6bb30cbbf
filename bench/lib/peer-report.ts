// bench:peer's bookkeeping: every round records each metric for both servers; the report gives
// per metric {kvserve, node_llama_cpp, ratio} — each side's median over the rounds, and the
// median of the per-round ratios (both sides measured minutes apart at most, so a ratio moves
// less with the machine than either number). ratio > 1 means kvserve is better: for throughput
// kvserve ÷ peer, for times, token counts and memory peer ÷ kvserve.
import { median } from './stats.js';

export type Side = 'kvserve' | 'node_llama_cpp';
export type Pair = Record<Side, number>;
/** Metric path ("single.tokens_per_s", "concurrent.16.ttft_p99_ms", …) → both sides' values in one round. */
export type Round = Map<string, Pair>;

export interface Figure {
  kvserve: number;
  node_llama_cpp: number;
  ratio: number;
}

const higherIsBetter = (path: string): boolean => path.endsWith('tokens_per_s');
const ratioOf = (path: string, p: Pair): number => (higherIsBetter(path) ? p.kvserve / p.node_llama_cpp : p.node_llama_cpp / p.kvserve);
const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;

/** Medians over rounds, as a nested object following the metric paths. */
export function summarize(rounds: Round[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const paths = [...new Set(rounds.flatMap((r) => [...r.keys()]))];
  for (const path of paths) {
    // A round where a side got no value (no first token inside the load window: the load runs in
    // another process, whose JSON turns NaN into null) is left out of this figure's medians.
    const pairs = rounds.map((r) => r.get(path)).filter((p): p is Pair => p !== undefined && Number.isFinite(p.kvserve) && Number.isFinite(p.node_llama_cpp));
    const med = (xs: number[]): number => (xs.length > 0 ? median(xs) : Number.NaN);
    const figure: Figure = {
      kvserve: round(med(pairs.map((p) => p.kvserve)), 2),
      node_llama_cpp: round(med(pairs.map((p) => p.node_llama_cpp)), 2),
      ratio: round(med(pairs.map((p) => ratioOf(path, p))), 3),
    };
    const keys = path.split('.');
    let node = out;
    for (const k of keys.slice(0, -1)) {
      node[k] ??= {};
      node = node[k] as Record<string, unknown>;
    }
    node[keys.at(-1)!] = figure;
  }
  return out;
}

const LABELS: Record<string, string> = {
  'single.tokens_per_s': 'one stream, 256 tokens: decode tokens/s',
  'single.ttft_256_ms': 'TTFT, fresh 256-token prompt (ms)',
  'single.ttft_1024_ms': 'TTFT, fresh 1,024-token prompt (ms)',
  'prefix.warm_ttft_ms': 'TTFT, 1,024-token prefix seen before + 16 new (ms)',
  'prefix.cold_ttft_ms': 'the same prompt cold (ms)',
  'prefix.chat_seconds': '10-turn chat, total (s)',
  'prefix.chat_prefilled_tokens': '10-turn chat, prompt tokens computed',
  'memory.idle_rss_mb': 'server RSS idle after load (MiB)',
  'memory.sessions_rss_mb': 'server RSS, 16 sessions of 1,024 tokens held (MiB)',
};

function label(path: string): string {
  const m = /^concurrent\.(\d+)\.(\w+)$/.exec(path);
  if (m) return `${m[1]} clients: ${m[2] === 'tokens_per_s' ? 'aggregate tokens/s' : `TTFT ${m[2]!.slice(5, 8)} (ms)`}`;
  return LABELS[path] ?? path;
}

/** The summary as a markdown table, rows in the order of the metric paths. */
export function markdownTable(summary: Record<string, unknown>): string {
  const rows: string[] = ['| measure | kvserve | node-llama-cpp | ratio (> 1: kvserve better) |', '|:--|--:|--:|--:|'];
  const walk = (node: Record<string, unknown>, prefix: string): void => {
    for (const [k, v] of Object.entries(node)) {
      const path = prefix ? `${prefix}.${k}` : k;
      const f = v as Partial<Figure> & Record<string, unknown>;
      if (typeof f.ratio === 'number') {
        const fmt = (x: number): string => x.toLocaleString('en-US', { maximumFractionDigits: x >= 100 ? 0 : x >= 10 ? 1 : 2 });
        rows.push(`| ${label(path)} | ${fmt(f.kvserve!)} | ${fmt(f.node_llama_cpp!)} | ${f.ratio.toFixed(2)}× |`);
      } else walk(f, path);
    }
  };
  walk(summary, '');
  return rows.join('\n');
}
