// A real Prometheus (Debian's package; .ci/run installs it) for the tests: started on a free
// port with its own temporary storage, queried through its HTTP API, killed on teardown.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { freePort } from './net.js';
import { waitFor } from './poll.js';

export interface Sample {
  metric: Record<string, string>;
  value: number;
}

export interface Prometheus {
  url: string;
  /** Evaluates `expr` now (GET /api/v1/query); throws unless Prometheus answers with a vector. */
  query(expr: string): Promise<Sample[]>;
  /** Everything Prometheus logged, for failure messages. */
  log(): string;
}

/** Runs `promtool check config` on a file; returns its exit status and output. */
export function promtoolCheckConfig(file: string): { status: number | null; output: string; error?: Error } {
  const r = spawnSync('promtool', ['check', 'config', file], { encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}`, ...(r.error ? { error: r.error } : {}) };
}

export async function startPrometheus(t: Test, configFile: string): Promise<Prometheus> {
  const storage = await mkdtemp(join(tmpdir(), 'kvserve-prometheus-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    'prometheus',
    [`--config.file=${configFile}`, `--storage.tsdb.path=${storage}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (text: string) => (log += text));
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (log += text));
  let spawnError: Error | undefined;
  child.once('error', (err) => (spawnError = err));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null && !spawnError) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
    }
    await rm(storage, { recursive: true, force: true });
  });

  await waitFor(
    'Prometheus to be ready (/-/ready)',
    async () => {
      if (spawnError) throw new Error(`cannot run prometheus (Debian package prometheus; .ci/run installs it): ${spawnError.message}`);
      if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}:\n${log}`);
      const res = await fetch(`${url}/-/ready`).catch(() => undefined);
      return res?.status === 200;
    },
    { timeoutMs: 30_000, intervalMs: 100 },
  );

  return {
    url,
    log: () => log,
    async query(expr) {
      const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
      const body = (await res.json()) as {
        status: string;
        error?: string;
        data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
      };
      if (body.status !== 'success' || !body.data) throw new Error(`query ${expr} failed (${res.status}): ${body.error ?? JSON.stringify(body)}`);
      if (body.data.resultType !== 'vector') throw new Error(`query ${expr}: a ${body.data.resultType}, not a vector`);
      return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
  };
}
