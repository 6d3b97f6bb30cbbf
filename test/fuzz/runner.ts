// Runs the HTTP fuzzer against a started server: `runs` requests over app.inject, `wireRuns`
// raw requests over the real socket, from one seed; collects every problem (a 5xx, a refusal
// not in the error shape) instead of stopping at the first, so a report lists them all.
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { type FuzzRequest, fuzzRequest, injectOne, judge, rawRequest, wireRequest } from './http-fuzz.js';

export interface FuzzOptions {
  app: FastifyInstance;
  port: number;
  seed: number;
  runs: number;
  wireRuns: number;
  /** Stop drawing new requests after this long (the count reached so far is reported). */
  timeLimitMs?: number;
}

export interface FuzzReport {
  seed: number;
  injected: number;
  wire: number;
  statuses: Record<string, number>;
  problems: Array<{ request: string; problem: string }>;
}

function describe(req: FuzzRequest): string {
  const payload =
    req.payload === undefined
      ? ''
      : ` ${String(req.payload).slice(0, 160)}${String(req.payload).length > 160 ? `… (${String(req.payload).length} chars)` : ''}`;
  return `${req.method} ${req.url.slice(0, 120)} ${JSON.stringify(req.headers).slice(0, 160)}${payload}`;
}

export async function runFuzz({ app, port, seed, runs, wireRuns, timeLimitMs }: FuzzOptions): Promise<FuzzReport> {
  const report: FuzzReport = { seed, injected: 0, wire: 0, statuses: {}, problems: [] };
  const count = (status: number): void => {
    report.statuses[status] = (report.statuses[status] ?? 0) + 1;
  };
  const deadline = timeLimitMs === undefined ? Number.POSITIVE_INFINITY : performance.now() + timeLimitMs;
  // fc.sample draws deterministically from the seed; each request is judged, none stops the run.
  for (const req of fc.sample(fuzzRequest, { seed, numRuns: runs })) {
    if (performance.now() > deadline) break;
    const verdict = await injectOne(app, req);
    report.injected++;
    count(verdict.status);
    if (!verdict.ok) report.problems.push({ request: describe(req), problem: verdict.problem! });
  }
  const wire = fc.sample(wireRequest, { seed: seed + 1, numRuns: wireRuns });
  // A few at a time: each is its own connection.
  for (let i = 0; i < wire.length; i += 8) {
    if (performance.now() > deadline) break;
    await Promise.all(
      wire.slice(i, i + 8).map(async (bytes) => {
        const method = bytes.toString('latin1').split(' ')[0] ?? '';
        try {
          const res = await rawRequest(port, bytes);
          report.wire++;
          count(res.status);
          // No status line at all: the server closed an unparseable connection, which is fine.
          const verdict = res.status === 0 ? { ok: true } : judge(method, res.status, res.contentType, res.body);
          if (!verdict.ok) report.problems.push({ request: `wire: ${bytes.toString('latin1').slice(0, 160)}`, problem: verdict.problem! });
        } catch (err) {
          report.problems.push({ request: `wire: ${bytes.toString('latin1').slice(0, 160)}`, problem: `no answer: ${(err as Error).message}` });
        }
      }),
    );
  }
  return report;
}
