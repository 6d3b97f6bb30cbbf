// Service configuration: config/default.json, overridden by environment variables, checked by
// one zod schema and frozen. A bad value stops start-up with one line naming the key.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), import.meta.url.includes('/dist/') ? '../..' : '..');
export const defaultConfigPath = resolve(projectRoot, 'config/default.json');

const schema = z.strictObject({
  host: z.string().min(1),
  /** This replica's name in the x-kvserve-instance header and logs (default: the host name). */
  instanceId: z.string().min(1).max(128).optional(),
  port: z.number().int().min(0).max(65535),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  model: z.strictObject({
    /** Model directory; relative paths resolve against the project root. */
    dir: z.string().min(1),
    /** ONNX file inside the directory (e.g. onnx/model_fp16.onnx); default: discovered. */
    file: z.string().min(1).optional(),
    /** onnxruntime intra-op threads for prefill steps; default: number of cores. */
    threads: z.number().int().positive().optional(),
    /** onnxruntime intra-op threads for decode steps (few tokens); default 1. */
    decodeThreads: z.number().int().positive().optional(),
    /** Let onnxruntime keep a prepacked copy of the weights for its GEMM kernels (faster prefill; more memory). */
    prepack: z.boolean(),
  }),
  kvCache: z.strictObject({
    /** Byte budget of the KV pool: running, session and prefix caches together. */
    maxBytes: z.number().int().positive(),
    /** Prefix-cache granularity in tokens. */
    blockSize: z.number().int().positive().max(1024),
    /** Sessions idle longer than this are evicted. */
    sessionTtlMs: z.number().int().positive(),
    /** How long a request may wait for KV room (all held by running requests) before a 503. */
    admissionTimeoutMs: z.number().int().min(0),
    /** Tier 2: the budget of evicted caches kept compressed in RAM (0: off). */
    compressedMaxBytes: z.number().int().min(0),
    /** Tier 2's encoding: int8 with per-token, per-head scales; float16; or off. */
    compressedDtype: z.enum(['int8', 'float16', 'off']),
    /** Tier 3: a directory for evicted caches, kept across restarts (unset: off). */
    dir: z.string().min(1).optional(),
    /** Tier 3's budget in bytes of files. */
    diskMaxBytes: z.number().int().positive(),
    /** Memory kept touched ahead of time for tier 3's reads (0: none), outside the KV budget. */
    diskReadReserveBytes: z.number().int().min(0),
    /** The tier thread's nice value (Linux): its background work yields the cores to decode steps. */
    tierNice: z.number().int().min(0).max(19),
    /** A Redis or Valkey server shared by replicas (redis://…; unset: off). */
    redisUrl: z.url({ protocol: /^rediss?$/ }).optional(),
    /** How long a lookup in Redis may take before it counts as a miss. */
    redisTimeoutMs: z.number().int().positive(),
    /** Entries waiting to be published to Redis, at most (beyond: dropped and counted). */
    redisMaxPendingBytes: z.number().int().positive(),
  }),
  scheduler: z.strictObject({
    /** Sequences running at once, i.e. the largest decode batch (continuous batching). */
    maxRunning: z.number().int().positive().max(1024),
    /** Requests waiting for a slot or KV room; beyond this a request gets 429 at once. */
    maxQueued: z.number().int().min(0),
    /** Prompt tokens prefilled per scheduler step (chunked prefill), over all newcomers. */
    maxPrefillTokensPerStep: z.number().int().positive(),
    /** A generation still unfinished this long after it arrived ends with request_timeout. */
    requestTimeoutMs: z.number().int().positive(),
    /**
     * Prefill newcomers' prompts on a thread of their own while the batch decodes; default:
     * when onnxruntime may use 2 or more threads (model.threads, else the cores).
     */
    prefillThread: z.boolean().optional(),
  }),
  engine: z.strictObject({
    /** This many worker-thread failures within restartWindowMs make the process exit 1 instead of restarting the engine again. */
    maxRestarts: z.number().int().positive(),
    restartWindowMs: z.number().int().positive(),
  }),
  limits: z.strictObject({
    /** Larger request bodies get 413. */
    bodyLimitBytes: z.number().int().positive(),
    /** max_tokens when a request names none (bounded by the room left in the context). */
    defaultMaxTokens: z.number().int().positive(),
    /** A client must send a request's headers and body within this long (408 after). */
    receiveTimeoutMs: z.number().int().positive(),
  }),
  sse: z.strictObject({
    /** `: ping` comment interval while a stream waits for its first token. */
    heartbeatMs: z.number().int().positive(),
    /** A stream reader that takes no bytes for this long is dropped (and its generation aborted). */
    writeTimeoutMs: z.number().int().positive(),
  }),
  playground: z.strictObject({
    /** Serve the browser playground and KV panel at GET / (false: 404). */
    enabled: z.boolean(),
  }),
  shutdown: z.strictObject({
    /** On SIGTERM/SIGINT running streams get this long to finish before they are ended. */
    graceMs: z.number().int().min(0),
  }),
  auth: z.strictObject({
    /** A JSON file of API keys, their tenants and limits (src/http/api-keys.ts); reloaded on SIGHUP. */
    keysFile: z.string().min(1).optional(),
    /** One API key, for tenant `default`. */
    apiKey: z.string().min(1).optional(),
    /** When set, GET /metrics needs it as a Bearer token. */
    metricsApiKey: z.string().min(1).optional(),
  }),
  cors: z.strictObject({
    /** Browser origins allowed to call the API (CORS); empty: none. */
    origins: z.array(z.string().min(1)),
  }),
});

export type Config = z.infer<typeof schema>;

/** Environment variable → config key path, with how to read the string. */
const ENV: Record<string, { path: string[]; type: 'string' | 'int' | 'bool' | 'list' }> = {
  HOST: { path: ['host'], type: 'string' },
  INSTANCE_ID: { path: ['instanceId'], type: 'string' },
  PORT: { path: ['port'], type: 'int' },
  LOG_LEVEL: { path: ['logLevel'], type: 'string' },
  MODEL_DIR: { path: ['model', 'dir'], type: 'string' },
  MODEL_FILE: { path: ['model', 'file'], type: 'string' },
  ORT_THREADS: { path: ['model', 'threads'], type: 'int' },
  ORT_DECODE_THREADS: { path: ['model', 'decodeThreads'], type: 'int' },
  ORT_PREPACK: { path: ['model', 'prepack'], type: 'bool' },
  KV_CACHE_MAX_BYTES: { path: ['kvCache', 'maxBytes'], type: 'int' },
  KV_CACHE_BLOCK_SIZE: { path: ['kvCache', 'blockSize'], type: 'int' },
  SESSION_TTL_MS: { path: ['kvCache', 'sessionTtlMs'], type: 'int' },
  KV_ADMISSION_TIMEOUT_MS: { path: ['kvCache', 'admissionTimeoutMs'], type: 'int' },
  KV_CACHE_COMPRESSED_MAX_BYTES: { path: ['kvCache', 'compressedMaxBytes'], type: 'int' },
  KV_CACHE_COMPRESSED_DTYPE: { path: ['kvCache', 'compressedDtype'], type: 'string' },
  KV_CACHE_DIR: { path: ['kvCache', 'dir'], type: 'string' },
  KV_CACHE_DISK_MAX_BYTES: { path: ['kvCache', 'diskMaxBytes'], type: 'int' },
  KV_CACHE_DISK_READ_RESERVE_BYTES: { path: ['kvCache', 'diskReadReserveBytes'], type: 'int' },
  KV_CACHE_TIER_NICE: { path: ['kvCache', 'tierNice'], type: 'int' },
  KV_CACHE_REDIS_URL: { path: ['kvCache', 'redisUrl'], type: 'string' },
  KV_CACHE_REDIS_TIMEOUT_MS: { path: ['kvCache', 'redisTimeoutMs'], type: 'int' },
  KV_CACHE_REDIS_MAX_PENDING_BYTES: { path: ['kvCache', 'redisMaxPendingBytes'], type: 'int' },
  MAX_RUNNING_SEQUENCES: { path: ['scheduler', 'maxRunning'], type: 'int' },
  MAX_QUEUED_REQUESTS: { path: ['scheduler', 'maxQueued'], type: 'int' },
  MAX_PREFILL_TOKENS_PER_STEP: { path: ['scheduler', 'maxPrefillTokensPerStep'], type: 'int' },
  REQUEST_TIMEOUT_MS: { path: ['scheduler', 'requestTimeoutMs'], type: 'int' },
  PREFILL_THREAD: { path: ['scheduler', 'prefillThread'], type: 'bool' },
  ENGINE_MAX_RESTARTS: { path: ['engine', 'maxRestarts'], type: 'int' },
  ENGINE_RESTART_WINDOW_MS: { path: ['engine', 'restartWindowMs'], type: 'int' },
  BODY_LIMIT_BYTES: { path: ['limits', 'bodyLimitBytes'], type: 'int' },
  DEFAULT_MAX_TOKENS: { path: ['limits', 'defaultMaxTokens'], type: 'int' },
  RECEIVE_TIMEOUT_MS: { path: ['limits', 'receiveTimeoutMs'], type: 'int' },
  SSE_HEARTBEAT_MS: { path: ['sse', 'heartbeatMs'], type: 'int' },
  SSE_WRITE_TIMEOUT_MS: { path: ['sse', 'writeTimeoutMs'], type: 'int' },
  PLAYGROUND: { path: ['playground', 'enabled'], type: 'bool' },
  SHUTDOWN_GRACE_MS: { path: ['shutdown', 'graceMs'], type: 'int' },
  API_KEYS_FILE: { path: ['auth', 'keysFile'], type: 'string' },
  API_KEY: { path: ['auth', 'apiKey'], type: 'string' },
  METRICS_API_KEY: { path: ['auth', 'metricsApiKey'], type: 'string' },
  CORS_ORIGINS: { path: ['cors', 'origins'], type: 'list' },
};

/** The environment variables, for the README and error messages. */
export const ENV_VARS = Object.freeze(Object.fromEntries(Object.entries(ENV).map(([k, v]) => [k, v.path.join('.')])));

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let node = obj;
  for (const key of path.slice(0, -1)) {
    node[key] ??= {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

function keyName(path: PropertyKey[]): string {
  const dotted = path.map(String).join('.');
  const env = Object.entries(ENV).find(([, v]) => v.path.join('.') === dotted)?.[0];
  return env ? `${dotted} (${env})` : dotted;
}

/** Reads the defaults file, applies `env` overrides, validates. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, file = defaultConfigPath): Readonly<Config> {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`config: cannot read ${file}: ${(err as Error).message}`);
  }
  for (const [name, { path, type }] of Object.entries(ENV)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    if (type === 'int') {
      if (!/^-?\d+$/.test(value.trim())) throw new ConfigError(`config: ${name}=${JSON.stringify(value)} is not an integer`);
      setPath(raw, path, Number(value));
    } else if (type === 'bool') {
      const flag = { true: true, '1': true, false: false, '0': false }[value.trim().toLowerCase()];
      if (flag === undefined) throw new ConfigError(`config: ${name}=${JSON.stringify(value)} is not a boolean (true, false, 1 or 0)`);
      setPath(raw, path, flag);
    } else if (type === 'list') {
      setPath(
        raw,
        path,
        value
          .split(',')
          .map((item) => item.trim())
          .filter((item) => item !== ''),
      );
    } else {
      setPath(raw, path, value);
    }
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`config: ${keyName(issue.path)}: ${issue.message}`);
  }
  const config = parsed.data;
  const fromEnv = env.MODEL_DIR !== undefined && env.MODEL_DIR !== '';
  if (!isAbsolute(config.model.dir)) {
    config.model.dir = resolve(fromEnv ? process.cwd() : projectRoot, config.model.dir);
  }
  if (config.auth.keysFile !== undefined && !isAbsolute(config.auth.keysFile)) {
    config.auth.keysFile = resolve(env.API_KEYS_FILE ? process.cwd() : projectRoot, config.auth.keysFile);
  }
  if (config.kvCache.dir !== undefined && !isAbsolute(config.kvCache.dir)) {
    config.kvCache.dir = resolve(env.KV_CACHE_DIR ? process.cwd() : projectRoot, config.kvCache.dir);
  }
  return deepFreeze(config);
}

function deepFreeze<T>(obj: T): Readonly<T> {
  if (obj && typeof obj === 'object') {
    for (const v of Object.values(obj)) deepFreeze(v);
    Object.freeze(obj);
  }
  return obj;
}
