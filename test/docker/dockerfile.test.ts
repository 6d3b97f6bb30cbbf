// The image, proven without a Docker engine: the Dockerfile is parsed and its steps replayed in
// a clean temporary copy of the build context — the build stage's COPY and RUN, then the runtime
// stage's COPY and production install — and the runtime stage's exact CMD is started with the
// image's environment, as an unprivileged user. It must become ready, stream a completion, pass
// the image's HEALTHCHECK command, and exit 0 on SIGTERM.
//
// Departures from a real build, all outside the Dockerfile's own steps: PORT is a free port
// (not 8080); an image path under a stage's WORKDIR (/app) maps into that stage's directory
// here, also in ENV values (MODEL_DIR); npm gets a private copy of this machine's npm cache and
// prefers it to the registry (`npm_config_prefer_offline`), so the runtime stage's
// `npm cache clean --force` cleans only that copy; the base image is this machine's Node 20.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { type CopyStep, dockerignore, parseDockerfile, type Stage } from '../helpers/dockerfile.js';
import { freePort } from '../helpers/net.js';
import { waitFor } from '../helpers/poll.js';
import { finishReasons, readSse } from '../helpers/sse.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const stages = parseDockerfile(await readFile(join(root, 'Dockerfile'), 'utf8'));
const ignored = dockerignore(await readFile(join(root, '.dockerignore'), 'utf8'));
const runtime = stages.at(-1)!;

t.test('the image is built as the issue asks', async (t) => {
  t.equal(stages.length, 2, 'two stages: build, runtime');
  const [build] = stages;
  for (const stage of stages)
    t.match(stage.base, /^node:20(\.[\d.]+)?-(bookworm|bullseye|trixie)-slim$/, `${stage.name}: Node 20 on slim Debian (${stage.base})`);
  t.ok(
    build!.steps.some((s) => 'run' in s && /^npm ci\b/.test(String(s.run)) && !/--omit=dev/.test(String(s.run))),
    'the build stage installs dev dependencies',
  );
  t.ok(
    runtime.steps.some((s) => 'run' in s && /^npm ci\b.*--omit=dev/.test(String(s.run))),
    'the runtime stage installs production dependencies only',
  );
  t.ok(runtime.user && !/^(root|0)(:|$)/.test(runtime.user), `runs as a non-root user (${runtime.user})`);
  t.ok(runtime.cmd, 'CMD in exec form (node receives SIGTERM itself, not a shell)');
  t.equal(runtime.cmd?.[0], 'node');
  t.ok(runtime.healthcheck, 'a HEALTHCHECK');
  t.match(runtime.healthcheck?.cmd.join(' ') ?? '', '/health/ready', 'the HEALTHCHECK asks /health/ready');
  t.ok(
    runtime.env.MODEL_DIR?.startsWith(`${runtime.workdir}/models/`),
    `the shipped model is the default MODEL_DIR (${runtime.env.MODEL_DIR}), overridable by ENV and a volume`,
  );
  t.strictSame(runtime.expose, [runtime.env.PORT], 'EXPOSE matches PORT');
  const start = (JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
  const threshold = /MALLOC_MMAP_THRESHOLD_=\$\{MALLOC_MMAP_THRESHOLD_:-(\d+)\}/.exec(start)?.[1];
  t.ok(threshold, 'npm start sets MALLOC_MMAP_THRESHOLD_ unless the environment does');
  t.equal(runtime.env.MALLOC_MMAP_THRESHOLD_, threshold, 'the image gives malloc the setting npm start gives it (src/main.ts says why)');
  t.match(start, /node --no-concurrent-marking dist\/src\/main\.js$/, 'npm start runs what the image runs');
  t.strictSame(runtime.cmd, ['node', '--no-concurrent-marking', 'dist/src/main.js'], 'the image runs what npm start runs');

  // What reaches the runtime stage: the build output, config, the model, the package manifests.
  const copied = runtime.steps.flatMap((s) => ('copy' in s ? s.copy.sources.map((src) => (s.copy.from ? `${s.copy.from}:${src}` : src)) : []));
  t.strictSame(
    copied.sort(),
    ['.npmrc', 'build:/app/dist', 'config', 'models', 'package-lock.json', 'package.json'],
    'the runtime stage copies only what it runs',
  );
  for (const s of runtime.steps) if ('run' in s) t.notMatch(String(s.run), /apt-get|apk |python|pip /, `no tools or Python installed: ${s.run}`);
});

t.test('.dockerignore keeps tests, tools, dependencies, build output and VCS data out of the context', async (t) => {
  for (const path of [
    'node_modules/tap/package.json',
    'dist/src/main.js',
    '.git/HEAD',
    '.tap/processinfo/x.json',
    '.ci/run',
    'test/main.test.ts',
    'test/helpers/server.ts',
    'bench/http.ts',
    'tools/train.py',
    'tools/out/ckpt.pt',
    'docker/compose.yml',
    'models/tiny-shakespeare/reference.json',
    'server.log',
  ]) {
    t.ok(ignored(path), `excluded: ${path}`);
  }
  for (const path of [
    'package.json',
    'package-lock.json',
    '.npmrc',
    'tsconfig.json',
    'tsconfig.build.json',
    'src/main.ts',
    'config/default.json',
    'models/tiny-shakespeare/onnx/model.onnx',
    'models/tiny-shakespeare/tokenizer.json',
  ]) {
    t.notOk(ignored(path), `kept: ${path}`);
  }
});

/**
 * `argv` under exactly `env`, through `env -i`: tap instruments every process the tests spawn
 * (its NODE_OPTIONS loader), and an image knows nothing of that. env execs, so signals sent to
 * the child reach the command itself.
 */
function clean(env: Record<string, string | undefined>, argv: string[]): [string, string[]] {
  const pairs = Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
  return ['env', ['-i', ...pairs, ...argv]];
}

/** Runs a command to completion; rejects with its output unless it exits 0. */
function run(argv: string[], options: { cwd: string; env: Record<string, string | undefined> }): Promise<void> {
  const [command, args] = clean(options.env, argv);
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b));
    child.stderr.on('data', (b: Buffer) => (output += b));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} exited ${code}:\n${output.slice(-4000)}`))));
  });
}

async function files(dir: string, skip: (rel: string) => boolean = () => false): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const rel = relative(dir, join(entry.parentPath, entry.name));
    if (!skip(rel)) out.push(rel);
  }
  return out;
}

t.test('the Dockerfile, replayed step by step, yields a service that streams and stops cleanly', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'kvserve-image-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  await chmod(work, 0o755); // the service runs as an unprivileged user below

  // The build context: the work tree's files (tracked, or new and not git-ignored) that
  // .dockerignore lets through.
  const context = join(work, 'context');
  const listed = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' });
  t.equal(listed.status, 0, 'git ls-files');
  const sent = listed.stdout.split('\0').filter((f) => f !== '' && !ignored(f) && existsSync(join(root, f)));
  for (const f of sent) await cp(join(root, f), join(context, f), { preserveTimestamps: true });
  t.notOk(
    sent.some((f) => /^(test|tools|bench|node_modules)\//.test(f)),
    'no tests, tools, benchmarks or dependencies in the context',
  );

  // npm: a private copy of this machine's cache, preferred to the registry.
  const npmCache = join(work, 'npm-cache');
  const cache = spawnSync('npm', ['config', 'get', 'cache'], { cwd: work, encoding: 'utf8' }).stdout.trim();
  if (cache && existsSync(join(cache, '_cacache'))) await cp(join(cache, '_cacache'), join(npmCache, '_cacache'), { recursive: true });
  const home = join(work, 'home');
  await mkdir(home);
  const baseEnv = { PATH: process.env.PATH, HOME: home, npm_config_cache: npmCache, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' };

  // Each stage gets its own root; the image path /x is <stage root>/x here.
  const stageRoot = (stage: Stage) => join(work, 'stages', stage.name ?? String(stages.indexOf(stage)));
  const inStage = (stage: Stage, path: string) => join(stageRoot(stage), path.startsWith('/') ? path : join(stage.workdir, path));
  const envOf = (stage: Stage) =>
    Object.fromEntries(Object.entries(stage.env).map(([k, v]) => [k, v === stage.workdir || v.startsWith(`${stage.workdir}/`) ? inStage(stage, v) : v]));

  async function copy(stage: Stage, step: CopyStep): Promise<void> {
    const from = step.from === undefined ? undefined : stages.find((s) => s.name === step.from);
    if (step.from !== undefined && !from) throw new Error(`COPY --from=${step.from}: no such stage`);
    const destDir = step.sources.length > 1 || step.dest.endsWith('/');
    for (const source of step.sources) {
      const src = from ? inStage(from, source) : join(context, source);
      if (!existsSync(src)) throw new Error(`COPY ${source}: not in the ${from ? `${from.name} stage` : 'build context'}`);
      const dest = inStage(stage, step.dest);
      // A directory's contents go into dest; a file goes to dest, or into it when dest is a directory.
      const target = (await stat(src)).isDirectory() || !destDir ? dest : join(dest, basename(source));
      await mkdir(dirname(target), { recursive: true });
      await cp(src, target, { recursive: true, preserveTimestamps: true });
    }
  }

  for (const stage of stages) {
    await mkdir(inStage(stage, stage.workdir), { recursive: true });
    for (const step of stage.steps) {
      if ('copy' in step) {
        await copy(stage, step.copy);
        continue;
      }
      const started = Date.now();
      const argv = typeof step.run === 'string' ? ['/bin/sh', '-c', step.run] : step.run;
      await run(argv, { cwd: inStage(stage, stage.workdir), env: { ...baseEnv, ...envOf(stage) } });
      t.pass(`${stage.name}: RUN ${step.run} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    }
  }

  // What the runtime image holds, besides its production dependencies.
  const app = inStage(runtime, runtime.workdir);
  const shipped = await files(app, (rel) => rel.startsWith('node_modules/'));
  t.ok(shipped.includes('dist/src/main.js') && shipped.includes('dist/src/workers/engine-worker.js'), 'the compiled service');
  t.ok(shipped.includes('models/tiny-shakespeare/onnx/model.onnx'), 'the shipped model');
  for (const file of ['index.html', 'app.js', 'app.css']) t.ok(shipped.includes(`dist/web/${file}`), `the playground bundle: dist/web/${file}`);
  t.strictSame(
    shipped.filter((f) => /(^|\/)(test|tools|bench)\/|\.test\.[jt]s$|\.py$|(^|\/)src\/.*\.ts$|reference\.json$/.test(f)),
    [],
    'no tests, tools, benchmarks, Python or TypeScript sources',
  );
  // A dev dependency may also be a production one's dependency (ajv is fastify's); the lockfile's
  // `dev` flag marks the packages only development needs.
  const lock = JSON.parse(await readFile(join(app, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  const devOnly = Object.entries(lock.packages).filter(([path, meta]) => path.startsWith('node_modules/') && meta.dev === true);
  t.ok(devOnly.length > 0, 'the lockfile marks development-only packages');
  t.strictSame(
    devOnly.map(([path]) => path).filter((path) => existsSync(join(app, path))),
    [],
    'no dev dependency installed',
  );

  // The exact CMD, with the image's environment, as an unprivileged user.
  const port = await freePort();
  const env = { PATH: process.env.PATH, HOME: '/nonexistent', ...envOf(runtime), PORT: String(port) };
  const user = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  const [command, args] = clean(env, runtime.cmd!);
  const child: ChildProcess = spawn(command, args, { cwd: app, ...user, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (b: Buffer) => (output += b));
  child.stderr!.on('data', (b: Buffer) => (output += b));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    '/health/ready to answer 200',
    async () => {
      if (child.exitCode !== null) throw new Error(`the service exited (${child.exitCode}) before it was ready:\n${output}`);
      return (await fetch(`${url}/health/ready`).catch(() => undefined))?.status === 200;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
  t.pass(`ready on port ${port} as ${user.uid === undefined ? 'this (non-root) user' : `uid ${user.uid}`}`);

  const healthcheck = () => spawnSync(...clean(env, runtime.healthcheck!.cmd), { cwd: app, ...user, encoding: 'utf8', timeout: 10_000 }).status;
  t.equal(healthcheck(), 0, "the image's HEALTHCHECK command passes");

  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'ROMEO:\n', max_tokens: 16, temperature: 0, ignore_eos: true, stream: true }),
  });
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/event-stream/);
  const { events, error } = await readSse(res.body);
  t.equal(error, undefined, 'read to the end');
  t.equal(events.at(-1), '[DONE]', 'ends with [DONE]');
  const text = events
    .slice(0, -1)
    .map((e) => (JSON.parse(e) as { choices: Array<{ text: string }> }).choices[0]?.text ?? '')
    .join('');
  t.ok(text.length > 0, `streamed text: ${JSON.stringify(text)}`);
  t.equal(finishReasons(events).at(-1), 'length', 'the last chunk finishes with length');

  // The playground is served from the image's bundle (dist/web), not only present in it.
  const page = await fetch(`${url}/`);
  t.equal(page.status, 200, 'GET / serves the playground');
  t.match(await page.text(), '/playground/app.js');
  t.equal((await fetch(`${url}/playground/app.js`)).status, 200, 'and its bundled script');

  child.kill('SIGTERM');
  t.equal(await exited, 0, `SIGTERM: exit code 0\n${output.slice(-2000)}`);
  t.not(healthcheck(), 0, 'the HEALTHCHECK fails once the service is gone');
});
