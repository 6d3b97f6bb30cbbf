// The playground in tests: its bundle built as `npm run build` builds it (web/build.mjs into
// dist/web, where src/routes/playground.ts reads it), and Debian's chromium driven by
// playwright-core (which downloads no browser: the executable is given).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium } from 'playwright-core';
import { which } from './binaries.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** Builds dist/web from web/ (a stale bundle from an earlier build would test old code). */
export function buildWeb(): void {
  const r = spawnSync(process.execPath, ['web/build.mjs'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`web/build.mjs failed:\n${r.stdout}${r.stderr}`);
}

/** Headless Debian chromium; call only after needs(t, 'chromium'). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: which('chromium')!,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 120_000,
  });
}

/** Where tests leave screenshots (git-ignored with the rest of .tap/). */
export const SCREENSHOTS = fileURLToPath(new URL('../../.tap/screenshots/', import.meta.url));
