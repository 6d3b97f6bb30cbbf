// The README and docs/ are part of the interface: every error of the catalog, every
// configuration variable and every metric is documented where users look for it, the pages
// link to files that exist, and the README stays a front door (small, no lab notebook).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { ENV_VARS } from '../src/config.js';
import { catalog } from '../src/errors.js';
import { parseDockerfile } from './helpers/dockerfile.js';
import { definedMetrics } from './helpers/metrics.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const readme = read('README.md');

/** The text of a `## heading` section (up to the next `## `). */
function section(doc: string, heading: string): string {
  const start = doc.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`no '${heading}'`);
  const end = doc.indexOf('\n## ', start + heading.length + 1);
  return doc.slice(start, end < 0 ? undefined : end);
}

t.test('the README is a front door', async (t) => {
  t.ok(Buffer.byteLength(readme) <= 15_000, `README.md is ${Buffer.byteLength(readme)} bytes (≤ 15,000)`);
  t.match(readme, '```sh\nnpm install && npm start', 'the first command');
  t.match(readme, '\nnpm test ', 'the second command');
  t.notMatch(readme, /20\d\d-\d\d-\d\d/, 'no dated experiments');
  for (const page of ['api', 'architecture', 'metrics', 'deployment', 'models', 'benchmarks']) t.match(readme, `(docs/${page}.md)`, `links docs/${page}.md`);
  t.match(readme, '(CONTRIBUTING.md)');
  t.ok(existsSync(join(root, 'LICENSE')), 'the LICENSE package.json promises');
  t.match(read('LICENSE'), /^MIT License/);
  t.equal((JSON.parse(read('package.json')) as { license: string }).license, 'MIT');
});

t.test('every relative link of the README, CONTRIBUTING and docs/ points at a file that exists', async (t) => {
  const pages = ['README.md', 'CONTRIBUTING.md', ...readdirSync(join(root, 'docs')).map((f) => `docs/${f}`)];
  for (const page of pages) {
    for (const [, target] of read(page).matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
      if (/^[a-z]+:/.test(target!)) continue;
      t.ok(existsSync(resolve(dirname(join(root, page)), target!)), `${page} → ${target}`);
    }
  }
});

t.test('no dated measurements in src/: they belong in docs/benchmarks.md', async (t) => {
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
  for (const file of walk(join(root, 'src'))) {
    const dated = readFileSync(file, 'utf8').match(/20\d\d-\d\d-\d\d/);
    t.notOk(dated, `${file.slice(root.length)} ${dated ? `mentions ${dated[0]}` : 'has no dates'}`);
  }
});

t.test('every error of the catalog is in the error table of docs/api.md', async (t) => {
  const api = read('docs/api.md');
  for (const [name, entry] of Object.entries(catalog)) {
    t.ok(entry.status >= 400 && entry.status < 600, `${name}: an error status`);
    const code = entry.code ?? name;
    const row = new RegExp(`\\|\\s*${entry.status}\\s*\\|\\s*\`${entry.type}\`\\s*\\|\\s*\`${code}\`[^\\n]*`).exec(api);
    if (!t.ok(row, `${name}: ${entry.status} ${entry.type} ${code}`)) continue;
    if ('retryAfterS' in entry) t.match(row![0], 'Retry-After', `${name}: its row says to retry after Retry-After`);
  }
});

t.test('every environment variable is in the README configuration table', async (t) => {
  for (const [variable, key] of Object.entries(ENV_VARS)) {
    t.match(readme, new RegExp(`\\|\\s*\`${variable}\`\\s*\\|\\s*\`${key.replace('.', '\\.')}\``), `${variable} → ${key}`);
  }
});

t.test('every metric is in docs/metrics.md with its type and labels, and only those', async (t) => {
  const registry = definedMetrics().registry;
  const exported = await registry.getMetricsAsJSON();
  const rows = new Map<string, string[]>();
  for (const line of read('docs/metrics.md').split('\n')) {
    const cells = line.split(/(?<!\\)\|/).map((c) => c.trim());
    const name = /^`((?:kvserve|process|nodejs)_[a-z0-9_]+)`$/.exec(cells[1] ?? '')?.[1];
    if (name && cells.length >= 5) rows.set(name, cells.slice(2, -1));
  }
  for (const metric of exported) {
    const row = rows.get(metric.name);
    if (!t.ok(row, `${metric.name} is documented`)) continue;
    t.equal(row![0], metric.type, `${metric.name}: a ${metric.type}`);
    const labelNames = (registry.getSingleMetric(metric.name) as unknown as { labelNames: string[] }).labelNames;
    // "`route`, `status`" or "`reason`=`lru`\|`ttl`…": each comma-separated item starts with a label name.
    const documented = row![1]!.split(/,\s*/).flatMap((item) => /^`([a-z_]+)`/.exec(item)?.[1] ?? []);
    t.strictSame(documented, [...labelNames], `${metric.name}: labels ${labelNames.join(', ') || '(none)'}`);
    t.ok(row![2]!.length > 0, `${metric.name}: a meaning`);
  }
  const names = new Set(exported.map((m) => m.name));
  for (const name of rows.keys()) t.ok(names.has(name), `${name}: documented and exported`);
});

t.test('docs/deployment.md covers building, running, the stack, volumes and the image variables', async (t) => {
  const deploy = read('docs/deployment.md');
  for (const command of ['docker build -t kvserve .', 'docker run --rm -p 8080:8080', 'docker compose up']) t.match(deploy, command, command);
  t.match(deploy, /-v \S+:\S+/, 'a volume for another model');
  const image = parseDockerfile(read('Dockerfile')).at(-1)!;
  for (const [name, value] of Object.entries(image.env)) t.match(deploy, `\`${name}=${value}\``, `the image's ${name}`);
  t.match(deploy, '../README.md#configuration', 'points at the configuration table');
  for (const port of ['8080', '9090', '3000'])
    t.match(section(deploy, '## With Prometheus and Grafana'), new RegExp(`\\| ${port} \\|`), `port ${port} in the services table`);
  for (const volume of ['prometheus-data', 'grafana-data']) t.match(deploy, volume, volume);
});

t.test('docs/architecture.md names a module for each behaviour, and every module it names exists', async (t) => {
  const arch = section(read('docs/architecture.md'), '## Where each behaviour lives');
  const named = [...arch.matchAll(/\]\(\.\.\/(src\/[^)]+)\)/g)].map((m) => m[1]!);
  t.ok(named.length >= 25, `${named.length} modules named`);
  for (const path of named) t.ok(existsSync(join(root, path)), path);
});
