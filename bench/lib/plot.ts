// A hand-written SVG line chart for bench/concurrency.ts: three panels side by side sharing
// a log₂ x axis (concurrent clients) — aggregate tokens/s (linear y), time to first token and
// inter-token latency (log₁₀ y, since a one-at-a-time server's queue spans decades) — with
// dashed goal lines. No plotting library: a few hundred bytes of <path> and <text> per panel.
//
//   ┌ tokens/s ─────────┐ ┌ TTFT ms (log) ────┐ ┌ ITL ms (log) ─────┐
//   │ ── series A       │ │ ── p50  - - p99   │ │                   │
//   │ - - goal          │ │                   │ │ - - goal          │
//   └─1──4──8──16──32───┘ └───────────────────┘ └───────────────────┘

export interface Series {
  label: string;
  color: string;
  /** Dashed line (e.g. a p99 beside its p50). */
  dashed?: boolean;
  points: { x: number; y: number }[];
}

/**
 * A dotted horizontal line across the panel with a marker at `x` (where the goal applies). Its
 * label is the marker's tooltip; the chart's legend note explains goals in words, since a label
 * in the panel collides with whatever series runs at that height.
 */
export interface GoalLine {
  label: string;
  y: number;
  x: number;
}

export interface Panel {
  title: string;
  yLabel: string;
  logY: boolean;
  series: Series[];
  goals: GoalLine[];
}

export interface Chart {
  title: string;
  subtitle: string;
  xLabel: string;
  xTicks: number[];
  panels: Panel[];
  /** Text after the legend (e.g. what dashed lines mean). */
  legendNote: string;
  /** A second line under the legend, in the goal lines' colour. */
  goalNote: string;
}

const PANEL_W = 330;
const PANEL_H = 250;
const MARGIN = { left: 58, right: 14, top: 30, bottom: 44 };
const HEADER_H = 50;
const LEGEND_H = 42;

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number): string => (Math.abs(v) >= 1000 ? v.toLocaleString('en-US', { maximumFractionDigits: 0 }) : String(Number(v.toPrecision(3))));
const n2 = (v: number): string => v.toFixed(1);

/** Round-number ticks (1, 2 or 5 × 10^k steps) covering [0, max]. */
function linearTicks(max: number): number[] {
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(v);
  if (ticks.at(-1)! < max) ticks.push(ticks.at(-1)! + step);
  return ticks;
}

/** 1, 2, 5 × 10^k ticks covering [min, max] (just the decades when that is too many). */
function logTicks(min: number, max: number): number[] {
  const lo = Math.floor(Math.log10(min));
  const hi = Math.ceil(Math.log10(max));
  const mult = hi - lo > 3 ? [1] : [1, 2, 5];
  const ticks: number[] = [];
  for (let k = lo; k <= hi; k++) for (const m of mult) ticks.push(m * 10 ** k);
  const first = ticks.findLastIndex((t) => t <= min);
  const last = ticks.findIndex((t) => t >= max);
  return ticks.slice(Math.max(0, first), last < 0 ? undefined : last + 1);
}

function renderPanel(panel: Panel, chart: Chart, ox: number, oy: number): string {
  const w = PANEL_W - MARGIN.left - MARGIN.right;
  const h = PANEL_H - MARGIN.top - MARGIN.bottom;
  const x0 = ox + MARGIN.left;
  const y0 = oy + MARGIN.top;
  const values = [...panel.series.flatMap((s) => s.points.map((p) => p.y)), ...panel.goals.map((g) => g.y)].filter(
    (v) => Number.isFinite(v) && (!panel.logY || v > 0),
  );
  // Headroom above the highest value keeps a goal line and its label clear of the panel title.
  const yTicks = panel.logY ? logTicks(Math.min(...values), Math.max(...values) * 1.3) : linearTicks(Math.max(...values) * 1.12);
  const [yMin, yMax] = [yTicks[0]!, yTicks.at(-1)!];
  const yPos = panel.logY
    ? (v: number): number => y0 + h - ((Math.log10(v) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * h
    : (v: number): number => y0 + h - ((v - yMin) / (yMax - yMin)) * h;
  const [xMin, xMax] = [Math.log2(chart.xTicks[0]!), Math.log2(chart.xTicks.at(-1)!)];
  const xPos = (v: number): number => x0 + ((Math.log2(v) - xMin) / (xMax - xMin)) * w;

  const out: string[] = [];
  out.push(`<text x="${n2(x0 + w / 2)}" y="${n2(oy + 16)}" class="ptitle">${esc(panel.title)}</text>`);
  for (const t of yTicks) {
    const y = yPos(t);
    out.push(`<line x1="${n2(x0)}" x2="${n2(x0 + w)}" y1="${n2(y)}" y2="${n2(y)}" class="grid"/>`);
    out.push(`<text x="${n2(x0 - 6)}" y="${n2(y + 4)}" class="ytick">${fmt(t)}</text>`);
  }
  for (const t of chart.xTicks) {
    const x = xPos(t);
    out.push(`<line x1="${n2(x)}" x2="${n2(x)}" y1="${n2(y0)}" y2="${n2(y0 + h)}" class="grid"/>`);
    out.push(`<text x="${n2(x)}" y="${n2(y0 + h + 16)}" class="xtick">${t}</text>`);
  }
  out.push(`<rect x="${n2(x0)}" y="${n2(y0)}" width="${n2(w)}" height="${n2(h)}" class="frame"/>`);
  out.push(`<text x="${n2(x0 + w / 2)}" y="${n2(y0 + h + 34)}" class="xlabel">${esc(chart.xLabel)}</text>`);
  out.push(`<text transform="translate(${n2(ox + 14)} ${n2(y0 + h / 2)}) rotate(-90)" class="ylabel">${esc(panel.yLabel)}</text>`);
  for (const g of panel.goals) {
    const y = yPos(g.y);
    const x = xPos(g.x);
    out.push(`<line x1="${n2(x0)}" x2="${n2(x0 + w)}" y1="${n2(y)}" y2="${n2(y)}" class="goal"/>`);
    out.push(
      `<path d="M${n2(x)} ${n2(y - 5)} L${n2(x + 5)} ${n2(y)} L${n2(x)} ${n2(y + 5)} L${n2(x - 5)} ${n2(y)} Z" class="goalmark"><title>${esc(g.label)}</title></path>`,
    );
  }
  for (const s of panel.series) {
    const pts = s.points.filter((p) => Number.isFinite(p.y) && (!panel.logY || p.y > 0));
    if (pts.length === 0) continue;
    const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${n2(xPos(p.x))} ${n2(yPos(p.y))}`).join(' ');
    out.push(`<path d="${d}" stroke="${s.color}" class="line${s.dashed ? ' dashed' : ''}"/>`);
    for (const p of pts) out.push(`<circle cx="${n2(xPos(p.x))}" cy="${n2(yPos(p.y))}" r="3" fill="${s.color}"/>`);
  }
  return out.join('\n');
}

/** The chart as a standalone SVG document. */
export function renderChart(chart: Chart): string {
  const width = PANEL_W * chart.panels.length + 20;
  const height = HEADER_H + PANEL_H + LEGEND_H + 10;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    '<style>',
    '  .title { font-size: 15px; font-weight: bold; fill: #222; }',
    '  .subtitle { font-size: 11px; fill: #555; }',
    '  .ptitle { font-size: 12px; font-weight: bold; fill: #222; text-anchor: middle; }',
    '  .grid { stroke: #e4e4e4; stroke-width: 1; }',
    '  .frame { fill: none; stroke: #999; stroke-width: 1; }',
    '  .xtick { font-size: 10px; fill: #444; text-anchor: middle; }',
    '  .ytick { font-size: 10px; fill: #444; text-anchor: end; }',
    '  .xlabel, .ylabel { font-size: 11px; fill: #333; text-anchor: middle; }',
    '  .line { fill: none; stroke-width: 2; }',
    '  .dashed { stroke-dasharray: 5 3; }',
    '  .goal { stroke: #c0392b; stroke-width: 1.2; stroke-dasharray: 2 3; }',
    '  .goalmark { fill: none; stroke: #c0392b; stroke-width: 1.5; }',
    '  .note { font-size: 11px; fill: #555; }',
    '  .goalnote { font-size: 11px; fill: #c0392b; }',
    '  .legend { font-size: 11px; fill: #333; }',
    '</style>',
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="10" y="20" class="title">${esc(chart.title)}</text>`,
    `<text x="10" y="38" class="subtitle">${esc(chart.subtitle)}</text>`,
  ];
  for (const [i, panel] of chart.panels.entries()) out.push(renderPanel(panel, chart, 10 + i * PANEL_W, HEADER_H));

  // One legend for all panels: every distinct label, in first-seen order.
  const seen = new Map<string, Series>();
  for (const s of chart.panels.flatMap((p) => p.series)) if (!seen.has(s.label)) seen.set(s.label, s);
  let x = 10 + MARGIN.left;
  const y = HEADER_H + PANEL_H + 14;
  for (const s of seen.values()) {
    out.push(`<line x1="${x}" x2="${x + 24}" y1="${y - 4}" y2="${y - 4}" stroke="${s.color}" class="line${s.dashed ? ' dashed' : ''}"/>`);
    out.push(`<text x="${x + 30}" y="${y}" class="legend">${esc(s.label)}</text>`);
    x += 40 + s.label.length * 6.2;
  }
  out.push(`<text x="${x + 10}" y="${y}" class="note">${esc(chart.legendNote)}</text>`);
  out.push(`<text x="${10 + MARGIN.left}" y="${y + 18}" class="goalnote">${esc(chart.goalNote)}</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
