// Tests that need a system program (promtool, prometheus, redis-server, haproxy, chromium) or a
// module of Debian's python3 (the tools/ scripts: onnx, numpy): in
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

/** Debian's python3, which tools/*.py run on (PyPI is not used). */
export const PYTHON = '/usr/bin/python3';

/** Python modules missing from Debian's python3 (all of them when there is no python3). */
function missingModules(modules: readonly string[]): string[] {
  return modules.filter((m) => spawnSync(PYTHON, ['-c', `import ${m}`], { stdio: 'ignore' }).status !== 0);
}

function skipOrFail(t: Test, message: string): false {
  if (inCi()) {
    t.fail(`${message} (CI must install it: .ci/run)`);
  } else {
    process.stderr.write(`\n  NOTICE ${t.name}: skipped, ${message}\n`);
    t.pass(message, { skip: message });
  }
  return false;
}

/**
 * True when every program is installed. Otherwise: in CI the test fails; elsewhere it is
 * skipped with a visible notice (false is returned, and the caller returns).
 */
export function needs(t: Test, ...programs: string[]): boolean {
  const missing = programs.filter((p) => which(p) === undefined);
  if (missing.length === 0) return true;
  const install = [...new Set(missing.map((p) => PACKAGES[p] ?? p))].join(' ');
  return skipOrFail(t, `needs ${missing.join(', ')}: apt-get install ${install}`);
}

/** As needs(), for modules of Debian's python3 (package python3-<module>). */
export function needsPython(t: Test, ...modules: string[]): boolean {
  const missing = missingModules(modules);
  if (missing.length === 0) return true;
  return skipOrFail(t, `needs python3 modules ${missing.join(', ')}: apt-get install ${missing.map((m) => `python3-${m}`).join(' ')}`);
}
