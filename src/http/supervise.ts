// The engine under supervision, wired to the app: each engine the supervisor starts is
// attached to the services (readiness follows it), failures and restarts are logged, and
// restarts counted (kvserve_engine_restarts_total). main.ts and the tests start it alike.
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { EngineClient } from '../workers/engine-client.js';
import type { WorkerConfig } from '../workers/protocol.js';
import { EngineSupervisor } from '../workers/supervisor.js';

/**
 * Starts the engine and keeps it running; rejects if the first start fails. `onGiveUp` runs
 * when too many failures ended supervision (the process should exit non-zero).
 */
export function superviseEngine(
  app: FastifyInstance,
  config: Readonly<Config>,
  worker: WorkerConfig,
  onGiveUp: (reason: string) => void,
): Promise<EngineSupervisor<EngineClient>> {
  const { maxRestarts, restartWindowMs } = config.engine;
  return EngineSupervisor.start({
    start: () => EngineClient.start(worker),
    maxRestarts,
    restartWindowMs,
    onEngine: (engine, restart) => {
      app.services.attach(engine);
      if (!restart) return;
      app.services.metrics.engineRestarts.inc();
      app.log.warn({ model: engine.info.id }, 'engine restarted; ready');
    },
    onFailure: (failure) => app.log.error({ failure }, 'engine failed: requests in flight ended with engine_restarted; restarting it'),
    onGiveUp: (reason) => {
      app.log.fatal({ reason }, 'engine keeps failing: giving up');
      onGiveUp(reason);
    },
  });
}
