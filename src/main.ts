// kvserve entry: configuration → HTTP server (liveness at once) → engine worker (readiness
// once the model is loaded) → graceful shutdown on SIGTERM/SIGINT; SIGHUP reloads the API keys.
import { pino } from 'pino';
import { buildApp } from './app.js';
import { readBuildInfo } from './build-info.js';
import { type Config, ConfigError, loadConfig } from './config.js';
import { superviseEngine } from './http/supervise.js';
import { type EngineClient, workerConfigOf } from './workers/engine-client.js';
import type { EngineSupervisor } from './workers/supervisor.js';

// `npm start` and the image run node with --no-concurrent-marking: garbage collection marks
// on the JS thread that allocates, not on V8's marker threads, which took a core from
// onnxruntime's spin-waiting threads and stalled whole steps (docs/benchmarks.md). It must be a
// command-line flag: switched at run time it raced a marking job under way and V8 aborted.
// They also set glibc's MALLOC_MMAP_THRESHOLD_=131072: every allocation of 128 KiB or more is
// its own mapping, given back to the system when freed. Left dynamic, the threshold rose as the
// model loaded and onnxruntime's weight buffers went into malloc's heaps, where the copies it
// frees after prepacking stayed resident: float32 SmolLM2-135M idle at ~1,200 MiB instead of
// ~940, decode and prefill speed unchanged (docs/benchmarks.md).

let config: Readonly<Config>;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
}

// JSON lines on stdout whether or not it is a terminal (a container must log); pipe through
// pino-pretty to read them by eye.
// kvserve's own lines never carry headers; the redaction guards any that might (a key is a secret).
const logger = pino({
  level: config.logLevel,
  base: { service: 'kvserve' },
  redact: { paths: ['req.headers.authorization', 'headers.authorization', 'authorization'], censor: '[redacted]' },
});
const build = readBuildInfo();
let app: Awaited<ReturnType<typeof buildApp>>;
try {
  app = await buildApp(config, logger, build);
} catch (err) {
  // A bad key file: one line naming the problem.
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
}
// Reload the key file without dropping anything: streams in flight keep going.
process.on('SIGHUP', () => {
  try {
    const keys = app.auth.reload();
    logger.info({ keys: keys.keyCount, tenants: keys.tenants().length }, 'API keys reloaded');
  } catch (err) {
    logger.error(`API keys not reloaded, the previous ones stay: ${(err as Error).message}`);
  }
});
await app.listen({ host: config.host, port: config.port });
if (!app.auth.keys.enabled && !isLoopback(config.host)) {
  logger.warn({ host: config.host }, 'listening beyond loopback without API keys: anyone who can reach this port can use it (set API_KEYS_FILE or API_KEY)');
}

let supervisor: EngineSupervisor<EngineClient>;
try {
  // Exit 1 once restarting keeps failing: an orchestrator restarts the whole process.
  supervisor = await superviseEngine(app, config, workerConfigOf(config), () => process.exit(1));
} catch (err) {
  logger.fatal(`cannot load model: ${(err as Error).message}`);
  await app.close();
  process.exit(1);
}
const engine = supervisor.engine;
const { info } = engine;
logger.info({ model: info.id, onnx: info.onnxPath, layout: info.layout, contextLength: info.contextLength, plan: engine.plan, build }, 'model loaded; ready');
if (engine.tiers) {
  const rejected = engine.tiers.rejectedAtOpen;
  const log = Object.keys(rejected).length > 0 ? logger.warn.bind(logger) : logger.info.bind(logger);
  log({ entries: engine.tiers.entries, rejected }, Object.keys(rejected).length > 0 ? 'KV cache dir: unusable files removed' : 'KV cache tiers ready');
}

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal, running: app.services.running, graceMs: config.shutdown.graceMs }, 'shutting down');
  app.services.drain();
  // Running streams get the grace period; then they are ended with a final chunk.
  const grace = setTimeout(() => app.services.abortAll(), config.shutdown.graceMs);
  // server.close() drops idle keep-alive connections once; a stream that ends during the
  // drain leaves one behind, so keep closing them until the server is down.
  const reaper = setInterval(() => app.server.closeIdleConnections(), 100);
  await app.close();
  clearTimeout(grace);
  clearInterval(reaper);
  await supervisor.close();
  logger.info('stopped');
  process.exit(0);
}
process.once('SIGTERM', () => void shutdown('SIGTERM'));
process.once('SIGINT', () => void shutdown('SIGINT'));

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
