// Tests that need a system program (promtool, prometheus, redis-server, haproxy, chromium): in
// CI (.ci/run installs them and sets CI=true) a missing one fails the test; elsewhere the test
// is skipped with a notice, on the terminal as well as in the TAP output, naming what to install.
import { spawnSync } from 'node:child_process';
import type { Test } from 'tap';

/** Where each program comes from on Debian. */
const PACKAGES: Record<string, string> = {
  promtool: 'prometheus',
  prometheus: 'prometheus',
  'redis-server': 'redis-server',
  'redis-cli': 'redis-tools',
  haproxy: 'haproxy',
  chromium: 'chromium',
};

export const inCi = (): boolean => process.env.CI === 'true' || process.env.CI === '1';

/** The program's path, or undefined if it is not on the PATH. */
export function which(program: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${program}`], { encoding: 'utf8' });
  const path = r.stdout.trim();
  return r.status === 0 && path ? path : undefined;
}

/**
 * True when every program is installed. Otherwise: in CI the test fails; elsewhere it is
 * skipped with a visible notice (false is returned, and the caller returns).
 */
export function needs(t: Test, ...programs: string[]): boolean {
  const missing = programs.filter((p) => which(p) === undefined);
  if (missing.length === 0) return true;
  const install = [...new Set(missing.map((p) => PACKAGES[p] ?? p))].join(' ');
  const message = `needs ${missing.join(', ')}: apt-get install ${install}`;
  if (inCi()) {
    t.fail(`${message} (CI must install it: .ci/run)`);
  } else {
    process.stderr.write(`\n  NOTICE ${t.name}: skipped, ${message}\n`);
    t.pass(message, { skip: message });
  }
  return false;
}
