// Bundles the playground (web/src/main.ts + app.css + index.html) into dist/web with esbuild:
// one minified script and one stylesheet, no CDN, served by src/routes/playground.ts.
// `npm run build` runs it after tsc; tests run it before they start a server.
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, '../dist/web');
mkdirSync(out, { recursive: true });
const common = { bundle: true, minify: true, target: 'es2022', legalComments: 'none', logLevel: 'warning' };
await build({ ...common, entryPoints: [join(here, 'src/main.ts')], outfile: join(out, 'app.js'), format: 'esm' });
await build({ ...common, entryPoints: [join(here, 'app.css')], outfile: join(out, 'app.css') });
copyFileSync(join(here, 'index.html'), join(out, 'index.html'));
