// `npm run fuzz [-- --seed N --runs N --wire N]` (or FUZZ_SEED, FUZZ_RUNS, FUZZ_WIRE_RUNS):
// the suite's HTTP fuzzer for long runs against a real server on the shipped model. Prints
// the statuses seen and every problem; exits 1 if there was any.
import { parseArgs } from 'node:util';
import { startServer } from '../helpers/server.js';
import { runFuzz } from './runner.js';

const { values } = parseArgs({ options: { seed: { type: 'string' }, runs: { type: 'string' }, wire: { type: 'string' } } });
const num = (arg: string | undefined, env: string | undefined, fallback: number): number => {
  const n = Number(arg ?? env ?? fallback);
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a count: ${arg ?? env}`);
  return n;
};
const seed = num(values.seed, process.env.FUZZ_SEED, Date.now() % 2 ** 31);
const runs = num(values.runs, process.env.FUZZ_RUNS, 50_000);
const wireRuns = num(values.wire, process.env.FUZZ_WIRE_RUNS, 2000);

const server = await startServer();
const started = performance.now();
process.stderr.write(`fuzzing ${server.url}: seed ${seed}, ${runs} injected + ${wireRuns} over the wire\n`);
const report = await runFuzz({ app: server.app, port: Number(new URL(server.url).port), seed, runs, wireRuns });
const ready = (await fetch(`${server.url}/health/ready`)).status;
const { cache } = await server.engine.stats();
await server.close();
const invariants = cache.bytes === cache.entryBytes && cache.pinnedEntries === 0 && cache.bytes <= cache.capacityBytes;
process.stdout.write(
  `${JSON.stringify({ seed, injected: report.injected, wire: report.wire, seconds: Math.round((performance.now() - started) / 100) / 10, statuses: report.statuses, ready, pool: { bytes: cache.bytes, entryBytes: cache.entryBytes, pinned: cache.pinnedEntries }, problems: report.problems.length })}\n`,
);
for (const p of report.problems) process.stdout.write(`PROBLEM ${p.problem}\n  request: ${p.request}\n`);
process.exit(report.problems.length === 0 && ready === 200 && invariants ? 0 : 1);
