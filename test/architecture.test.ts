// The code's shape is checked, not only hoped for: no import cycles anywhere in src/ (type-only
// imports included), routes never import one another, the core never reaches up into the
// HTTP or worker layers or into onnxruntime, and every module stays small enough to read in
// one sitting.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const src = fileURLToPath(new URL('../src/', import.meta.url));
const walk = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : /\.(ts|mjs)$/.test(e.name) ? [join(dir, e.name)] : []));
const files = walk(src);
const rel = (file: string) => relative(src, file);

/** Each module's imports: relative ones resolved to files, and bare package names. */
const graph = new Map<string, { local: string[]; packages: string[] }>();
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm)].map((m) => m[1] ?? m[2]!);
  const local = specs.filter((s) => s.startsWith('.')).map((s) => resolve(dirname(file), s.replace(/\.js$/, '.ts')));
  graph.set(file, { local, packages: specs.filter((s) => !s.startsWith('.')) });
}

t.test('every relative import resolves to a module of src/', async (t) => {
  for (const [file, { local }] of graph) for (const target of local) t.ok(graph.has(target), `${rel(file)} → ${rel(target)}`);
});

t.test('no import cycles in src/', async (t) => {
  const state = new Map<string, 'visiting' | 'done'>();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]): void => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'visiting') {
      cycles.push([...path.slice(path.indexOf(file)), file].map(rel).join(' → '));
      return;
    }
    state.set(file, 'visiting');
    for (const next of graph.get(file)?.local ?? []) visit(next, [...path, file]);
    state.set(file, 'done');
  };
  for (const file of graph.keys()) visit(file, []);
  t.strictSame(cycles, [], 'no module reaches itself through its imports');
  t.ok(graph.size > 40, `${graph.size} modules checked`);
});

t.test('routes never import another route', async (t) => {
  for (const [file, { local }] of graph) {
    if (!rel(file).startsWith('routes/')) continue;
    for (const target of local) t.notOk(rel(target).startsWith('routes/'), `${rel(file)} imports ${rel(target)}`);
  }
});

t.test('the core imports neither the HTTP, route or worker layers nor onnxruntime or Fastify', async (t) => {
  for (const [file, { local, packages }] of graph) {
    if (!rel(file).startsWith('core/')) continue;
    for (const target of local) t.match(rel(target), /^(core|metrics\/buckets)/, `${rel(file)} → ${rel(target)}`);
    for (const pkg of packages) t.notMatch(pkg, /^(onnxruntime|fastify)/, `${rel(file)} uses ${pkg}`);
  }
});

t.test('no module in src/ over 350 lines', async (t) => {
  for (const file of files) {
    const lines = readFileSync(file, 'utf8').split('\n').length;
    t.ok(lines <= 350, `${rel(file)}: ${lines} lines`);
  }
});
