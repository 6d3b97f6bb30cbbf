// kvserve entry: configuration → HTTP server (liveness at once) → engine worker (readiness
// once the model is loaded) → graceful shutdown on SIGTERM/SIGINT.
import { pino } from 'pino';
import { buildApp } from './app.js';
import { type Config, ConfigError, loadConfig } from './config.js';
import { EngineClient, workerConfigOf } from './engine/client.js';

// `npm start` and the Docker image run node with --no-concurrent-marking: garbage collection
// marks on the JS thread that allocates (incrementally), not on V8's concurrent marker
// threads. Why: the worker's onnxruntime steps use every core, with threads that spin-wait on
// each other; a concurrent marker thread taking a core stalls a whole step. Measured in the
// engine worker with 16 streams on 2 cores (2026-11-29, side by side): major GCs 17 vs 30–32
// in 6 s; over HTTP (bench:concurrency's load, 3 pairs) p99 inter-token latency 14.0–15.8 vs
// 16.1–20.4 ms at 16 clients and 3.7–4.0 vs 4.0–4.2 ms at one, tokens/s within noise.
// It must be a command-line flag: set here at run time (v8.setFlagsFromString, as before),
// it raced a marking job already under way and V8 aborted the process ("Fatal error ...
// unreachable code" in ConcurrentMarking::RunMajor, seen once under bench load).

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
const logger = pino({ level: config.logLevel, base: { service: 'kvserve' } });
const app = await buildApp(config, logger);
await app.listen({ host: config.host, port: config.port });

let engine: EngineClient;
try {
  engine = await EngineClient.start(workerConfigOf(config));
} catch (err) {
  logger.fatal(`cannot load model: ${(err as Error).message}`);
  await app.close();
  process.exit(1);
}
app.services.attach(engine);
const { info } = engine;
logger.info({ model: info.id, onnx: info.onnxPath, layout: info.layout, contextLength: info.contextLength }, 'model loaded; ready');

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
  await engine.close();
  logger.info('stopped');
  process.exit(0);
}
process.once('SIGTERM', () => void shutdown('SIGTERM'));
process.once('SIGINT', () => void shutdown('SIGINT'));
