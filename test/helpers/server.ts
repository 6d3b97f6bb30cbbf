// One helper builds the real service for tests: config from config/default.json plus
// overrides, the engine worker on the shipped model, a server listening on a free port.
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { buildApp } from '../../src/app.js';
import { readBuildInfo } from '../../src/build-info.js';
import { type Config, loadConfig } from '../../src/config.js';
import { superviseEngine } from '../../src/http/supervise.js';
import { type EngineClient, workerConfigOf } from '../../src/workers/engine-client.js';
import type { EngineSupervisor } from '../../src/workers/supervisor.js';
import { MODEL_DIR } from './model.js';

export interface TestServer {
  app: FastifyInstance;
  /** The engine serving now (a new one after a restart). */
  readonly engine: EngineClient;
  supervisor: EngineSupervisor<EngineClient>;
  /** Reasons the supervisor gave up with (the service would have exited 1). */
  gaveUp: string[];
  config: Readonly<Config>;
  /** http://127.0.0.1:<port> */
  url: string;
  close(): Promise<void>;
}

export interface StartOptions {
  /** Environment-variable overrides, as an operator would set them. */
  env?: Record<string, string>;
  /** Receives the service's log lines, parsed (the level is then 'info' unless LOG_LEVEL says otherwise). */
  onLog?: (line: Record<string, unknown>) => void;
  /** Let the test crash the engine's threads (EngineClient.crash). */
  faultInjection?: boolean;
}

export async function startServer({ env = {}, onLog, faultInjection = false }: StartOptions = {}): Promise<TestServer> {
  const config = loadConfig({ MODEL_DIR, LOG_LEVEL: onLog ? 'info' : 'silent', PORT: '0', HOST: '127.0.0.1', ...env });
  const destination = onLog ? { write: (line: string) => onLog(JSON.parse(line) as Record<string, unknown>) } : undefined;
  const logger = destination ? pino({ level: config.logLevel }, destination) : pino({ level: config.logLevel });
  const app = await buildApp(config, logger, readBuildInfo());
  const gaveUp: string[] = [];
  const supervisor = await superviseEngine(app, config, { ...workerConfigOf(config), faultInjection }, (reason) => gaveUp.push(reason));
  await app.listen({ host: config.host, port: 0 });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return {
    app,
    get engine() {
      return supervisor.engine;
    },
    supervisor,
    gaveUp,
    config,
    url: `http://127.0.0.1:${address.port}`,
    async close() {
      await app.close();
      await supervisor.close();
    },
  };
}
