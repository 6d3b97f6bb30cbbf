// loadConfig: config/default.json's defaults, one override per environment variable, relative
// MODEL_DIR against the cwd, one-line ConfigErrors naming the variable, and a frozen result.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve, sep } from 'node:path';
import t from 'tap';
import { type Config, ConfigError, ENV_VARS, defaultConfigPath, loadConfig } from '../src/config.js';

const defaults = loadConfig({});
const file = JSON.parse(readFileSync(defaultConfigPath, 'utf8')) as Record<string, unknown>;

t.test('defaults come from config/default.json', async (t) => {
  t.equal(defaults.port, 8080);
  t.equal(defaults.host, file.host);
  t.equal(defaults.logLevel, file.logLevel);
  t.strictSame(defaults.kvCache, file.kvCache);
  t.strictSame(defaults.limits, file.limits);
  t.strictSame(defaults.sse, file.sse);
  t.strictSame(defaults.shutdown, file.shutdown);
  t.equal(defaults.host, '127.0.0.1', 'npm start listens on loopback only (the image sets HOST=0.0.0.0)');
  t.strictSame(defaults.auth, {}, 'no keys by default');
  t.strictSame(defaults.cors.origins, [], 'no CORS origins by default');
  t.ok(isAbsolute(defaults.model.dir), `model.dir is absolute: ${defaults.model.dir}`);
  t.ok(defaults.model.dir.endsWith(`${sep}models${sep}tiny-shakespeare`), 'model.dir ends with models/tiny-shakespeare');
  t.equal(defaults.model.dir, resolve(defaultConfigPath, '../../models/tiny-shakespeare'), 'relative to the project root, not the cwd');
  t.equal(defaults.model.file, undefined);
  t.equal(defaults.model.threads, undefined);
});

/** Each variable, a valid value for it, and where it lands. */
const overrides: Array<[name: string, value: string, get: (c: Readonly<Config>) => unknown, expected: unknown]> = [
  ['HOST', '0.0.0.0', (c) => c.host, '0.0.0.0'],
  ['INSTANCE_ID', 'replica-7', (c) => c.instanceId, 'replica-7'],
  ['PORT', '9001', (c) => c.port, 9001],
  ['LOG_LEVEL', 'debug', (c) => c.logLevel, 'debug'],
  ['MODEL_DIR', '/srv/models/other', (c) => c.model.dir, '/srv/models/other'],
  ['MODEL_FILE', 'onnx/model_fp16.onnx', (c) => c.model.file, 'onnx/model_fp16.onnx'],
  ['ORT_THREADS', '3', (c) => c.model.threads, 3],
  ['ORT_DECODE_THREADS', '2', (c) => c.model.decodeThreads, 2],
  ['ORT_PREPACK', '0', (c) => c.model.prepack, false],
  ['KV_CACHE_MAX_BYTES', '1048576', (c) => c.kvCache.maxBytes, 1048576],
  ['KV_CACHE_BLOCK_SIZE', '32', (c) => c.kvCache.blockSize, 32],
  ['SESSION_TTL_MS', '1000', (c) => c.kvCache.sessionTtlMs, 1000],
  ['KV_ADMISSION_TIMEOUT_MS', '0', (c) => c.kvCache.admissionTimeoutMs, 0],
  ['KV_CACHE_COMPRESSED_MAX_BYTES', '0', (c) => c.kvCache.compressedMaxBytes, 0],
  ['KV_CACHE_COMPRESSED_DTYPE', 'float16', (c) => c.kvCache.compressedDtype, 'float16'],
  ['KV_CACHE_DIR', '/var/cache/kvserve', (c) => c.kvCache.dir, '/var/cache/kvserve'],
  ['KV_CACHE_DISK_MAX_BYTES', '4096', (c) => c.kvCache.diskMaxBytes, 4096],
  ['KV_CACHE_DISK_READ_RESERVE_BYTES', '0', (c) => c.kvCache.diskReadReserveBytes, 0],
  ['KV_CACHE_TIER_NICE', '19', (c) => c.kvCache.tierNice, 19],
  ['KV_CACHE_REDIS_URL', 'redis://cache:6379', (c) => c.kvCache.redisUrl, 'redis://cache:6379'],
  ['KV_CACHE_REDIS_TIMEOUT_MS', '250', (c) => c.kvCache.redisTimeoutMs, 250],
  ['KV_CACHE_REDIS_MAX_PENDING_BYTES', '1024', (c) => c.kvCache.redisMaxPendingBytes, 1024],
  ['MAX_RUNNING_SEQUENCES', '4', (c) => c.scheduler.maxRunning, 4],
  ['MAX_QUEUED_REQUESTS', '0', (c) => c.scheduler.maxQueued, 0],
  ['MAX_PREFILL_TOKENS_PER_STEP', '32', (c) => c.scheduler.maxPrefillTokensPerStep, 32],
  ['REQUEST_TIMEOUT_MS', '1000', (c) => c.scheduler.requestTimeoutMs, 1000],
  ['PREFILL_THREAD', '0', (c) => c.scheduler.prefillThread, false],
  ['ENGINE_MAX_RESTARTS', '5', (c) => c.engine.maxRestarts, 5],
  ['ENGINE_RESTART_WINDOW_MS', '1000', (c) => c.engine.restartWindowMs, 1000],
  ['BODY_LIMIT_BYTES', '4096', (c) => c.limits.bodyLimitBytes, 4096],
  ['DEFAULT_MAX_TOKENS', '64', (c) => c.limits.defaultMaxTokens, 64],
  ['RECEIVE_TIMEOUT_MS', '5000', (c) => c.limits.receiveTimeoutMs, 5000],
  ['SSE_HEARTBEAT_MS', '250', (c) => c.sse.heartbeatMs, 250],
  ['SSE_WRITE_TIMEOUT_MS', '1500', (c) => c.sse.writeTimeoutMs, 1500],
  ['PLAYGROUND', 'false', (c) => c.playground.enabled, false],
  ['SHUTDOWN_GRACE_MS', '0', (c) => c.shutdown.graceMs, 0],
  ['API_KEYS_FILE', '/etc/kvserve/keys.json', (c) => c.auth.keysFile, '/etc/kvserve/keys.json'],
  ['API_KEY', 'sk-one', (c) => c.auth.apiKey, 'sk-one'],
  ['METRICS_API_KEY', 'sk-metrics', (c) => c.auth.metricsApiKey, 'sk-metrics'],
  ['CORS_ORIGINS', 'https://a.example, https://b.example,', (c) => c.cors.origins, ['https://a.example', 'https://b.example']],
];

t.test('every environment variable overrides its key, and only that key', async (t) => {
  t.strictSame(overrides.map(([name]) => name).sort(), Object.keys(ENV_VARS).sort(), 'the table covers every documented variable');
  for (const [name, value, get, expected] of overrides) {
    const config = loadConfig({ [name]: value });
    t.strictSame(get(config), expected, `${name}=${value}`);
    t.not(get(defaults), expected, `${name}: the value differs from the default`);
    // Everything else is untouched: put the default back and the two configs are equal.
    const other = structuredClone(config) as Config;
    const path = ENV_VARS[name]!.split('.');
    let node = other as unknown as Record<string, unknown>;
    for (const key of path.slice(0, -1)) node = node[key] as Record<string, unknown>;
    let dflt = defaults as unknown as Record<string, unknown>;
    for (const key of path.slice(0, -1)) dflt = dflt[key] as Record<string, unknown>;
    const leaf = path.at(-1)!;
    if (dflt[leaf] === undefined) delete node[leaf];
    else node[leaf] = dflt[leaf];
    t.strictSame(other, defaults, `${name} changes nothing else`);
  }
});

t.test('PREFILL_THREAD takes true/false/1/0, any case', async (t) => {
  t.equal(defaults.scheduler.prefillThread, undefined, 'unset: decided by the thread count (engine/client.ts)');
  for (const [value, expected] of [
    ['1', true],
    ['true', true],
    ['TRUE', true],
    ['0', false],
    ['false', false],
    [' False ', false],
  ] as const) {
    t.equal(loadConfig({ PREFILL_THREAD: value }).scheduler.prefillThread, expected, `PREFILL_THREAD=${JSON.stringify(value)}`);
  }
});

t.test('an empty variable is the same as an unset one', async (t) => {
  t.strictSame(loadConfig({ PORT: '', LOG_LEVEL: '', MODEL_DIR: '' }), defaults);
});

t.test('a relative MODEL_DIR resolves against the current directory', async (t) => {
  const before = process.cwd();
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-config-'));
  t.teardown(() => {
    process.chdir(before);
    rmSync(dir, { recursive: true, force: true });
  });
  process.chdir(dir);
  const config = loadConfig({ MODEL_DIR: 'models/mine' });
  t.equal(config.model.dir, resolve(process.cwd(), 'models/mine'));
  t.ok(isAbsolute(config.model.dir));
  t.equal(loadConfig({ MODEL_DIR: '.' }).model.dir, process.cwd());
});

const bad: Array<[name: string, value: string]> = [
  ['PORT', 'abc'],
  ['PORT', '70000'],
  ['PORT', '-1'],
  ['PORT', '80.5'],
  ['LOG_LEVEL', 'loud'],
  ['BODY_LIMIT_BYTES', '0'],
  ['SHUTDOWN_GRACE_MS', '-1'],
  ['ENGINE_MAX_RESTARTS', '0'],
  ['ENGINE_RESTART_WINDOW_MS', '0'],
  ['ORT_THREADS', '0'],
  ['DEFAULT_MAX_TOKENS', 'many'],
  ['SSE_HEARTBEAT_MS', '0'],
  ['KV_CACHE_BLOCK_SIZE', '4096'],
  ['KV_CACHE_TIER_NICE', '20'],
  ['KV_CACHE_TIER_NICE', '-5'],
  ['PREFILL_THREAD', 'yes'],
  ['ORT_PREPACK', 'maybe'],
  ['PLAYGROUND', 'off'],
];

for (const [name, value] of bad) {
  t.test(`${name}=${value} is refused with one line naming ${name}`, async (t) => {
    let caught: unknown;
    try {
      loadConfig({ [name]: value });
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof ConfigError, 'throws a ConfigError');
    const message = (caught as Error | undefined)?.message ?? '';
    t.match(message, name, `names ${name}: ${JSON.stringify(message)}`);
    t.notMatch(message, /\n/, 'one line');
  });
}

t.test('an unreadable defaults file is a ConfigError naming the file', async (t) => {
  const missing = join(tmpdir(), 'kvserve-no-such-config.json');
  let caught: unknown;
  try {
    loadConfig({}, missing);
  } catch (err) {
    caught = err;
  }
  t.ok(caught instanceof ConfigError, 'throws a ConfigError');
  t.match((caught as Error | undefined)?.message, missing);
});

t.test('the returned config is frozen, all the way down', async (t) => {
  const config = loadConfig({ MODEL_FILE: 'onnx/model.onnx' });
  for (const part of [config, config.model, config.kvCache, config.limits, config.sse, config.shutdown]) t.ok(Object.isFrozen(part));
  t.throws(() => {
    (config as { port: number }).port = 1;
  }, TypeError);
  t.throws(() => {
    (config.model as { dir: string }).dir = '/elsewhere';
  }, TypeError);
  t.equal(config.port, 8080);
  t.equal(config.model.dir, defaults.model.dir);
  t.not(loadConfig({}), loadConfig({}), 'each call builds its own object');
});
