// What every benchmark result records beside its figures: the commit whose src/ ran (with
// "+dirty" if src/ had uncommitted changes), the date, the machine and the runtime versions,
// so docs/benchmarks.md can say exactly what was measured.
import { execFileSync } from 'node:child_process';
import { availableParallelism, cpus, platform, release } from 'node:os';
import * as ort from 'onnxruntime-node';
import { ROOT } from './server.js';

export interface BenchMeta {
  commit: string;
  date: string;
  machine: { cpu: string; cores: number; os: string };
  node: string;
  onnxruntime: string;
}

/** The commit whose src/ is measured, with "+dirty" when src/ has uncommitted changes. */
export function kvserveCommit(): string {
  try {
    const git = (...args: string[]): string => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
    return `${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain', '--', 'src') === '' ? '' : '+dirty'}`;
  } catch {
    return 'unknown';
  }
}

export function benchMeta(): BenchMeta {
  return {
    commit: kvserveCommit(),
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), os: `${platform()} ${release()}` },
    node: process.version,
    onnxruntime: ort.env.versions.node ?? 'unknown',
  };
}
