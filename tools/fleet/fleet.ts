// A kvserve fleet on loopback: a Redis server (the shared KV tier), N replicas, and HAProxy in
// front routing by session and prompt prefix (docker/haproxy/haproxy-config.ts). What
// `npm run fleet` starts, and what the fleet tests and bench:fleet drive.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Policy, haproxyConfig } from '../../docker/haproxy/haproxy-config.js';
import { type ServerProcess, startServerProcess } from '../../bench/lib/server.js';

export interface FleetOptions {
  replicas: number;
  /** The load balancer's port. */
  port: number;
  /** Replica i (from 1) listens on basePort + i - 1 … */
  basePort?: number;
  /** … or on these ports. */
  replicaPorts?: readonly number[];
  redisPort: number;
  policy?: Policy;
  /** Start Redis and give the replicas the shared tier (default true). */
  redis?: boolean;
  /** Extra environment for every replica. */
  env?: Record<string, string>;
  /** Health-check period of the load balancer. */
  checkIntervalMs?: number;
}

export interface Replica {
  name: string;
  port: number;
  url: string;
  server: ServerProcess;
}

export interface Fleet {
  url: string;
  redisUrl: string;
  replicas: Replica[];
  /** Starts replica `name` again (after a kill), on its port. */
  restart(name: string): Promise<Replica>;
  stopRedis(): Promise<void>;
  startRedis(): Promise<void>;
  stop(): Promise<void>;
}

class Program {
  readonly #child: ChildProcess;
  #tail = '';
  readonly exited: Promise<number | null>;

  constructor(command: string, args: string[]) {
    this.#child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer): void => {
      this.#tail = (this.#tail + chunk.toString('utf8')).slice(-4000);
    };
    this.#child.stdout!.on('data', keep);
    this.#child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => this.#child.once('exit', (code) => resolve(code)));
  }

  get output(): string {
    return this.#tail;
  }

  get alive(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Resolves once something accepts connections on 127.0.0.1:port. */
async function listening(port: number, program: Program, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    if (!program.alive || Date.now() > deadline) throw new Error(`${what} did not start:\n${program.output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function startRedis(port: number): Program {
  // A cache, not a database: no persistence; maxmemory + LRU bound it (docs/deployment.md).
  return new Program('redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--maxmemory',
    '512mb',
    '--maxmemory-policy',
    'allkeys-lru',
  ]);
}

export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const { replicas: n, port, redisPort, policy = 'cache-aware', env = {}, checkIntervalMs = 500 } = options;
  const withRedis = options.redis ?? true;
  const replicaPorts = options.replicaPorts ?? Array.from({ length: n }, (_, i) => (options.basePort ?? port + 1) + i);
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-fleet-'));
  const redisUrl = `redis://127.0.0.1:${redisPort}`;
  const started: { stop(): Promise<unknown> }[] = [];
  const stopAll = async () => {
    await Promise.all(started.map((s) => s.stop().catch(() => {})));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    let redis: Program | undefined;
    if (withRedis) {
      redis = startRedis(redisPort);
      await listening(redisPort, redis, 'redis-server');
    }
    started.push({ stop: async () => redis?.stop() });

    const names = Array.from({ length: n }, (_, i) => `replica-${i + 1}`);
    const startReplica = async (name: string, i: number): Promise<Replica> => {
      const replicaPort = replicaPorts[i]!;
      const shared: Record<string, string> = withRedis ? { KV_CACHE_REDIS_URL: redisUrl } : {};
      const server = await startServerProcess({ ...env, PORT: String(replicaPort), INSTANCE_ID: name, ...shared });
      return { name, port: replicaPort, url: server.url, server };
    };
    // One at a time: each loads the model with every core.
    const replicas: Replica[] = [];
    for (const [i, name] of names.entries()) {
      const r = await startReplica(name, i);
      replicas.push(r);
      started.push({ stop: () => r.server.stop() });
    }

    const cfg = join(dir, 'haproxy.cfg');
    writeFileSync(
      cfg,
      haproxyConfig({
        bind: `127.0.0.1:${port}`,
        servers: replicas.map((r) => ({ name: r.name, address: `127.0.0.1:${r.port}` })),
        policy,
        checkIntervalMs,
      }),
    );
    const haproxy = new Program('haproxy', ['-db', '-f', cfg]);
    started.unshift({ stop: () => haproxy.stop() });
    await listening(port, haproxy, 'haproxy');

    return {
      url: `http://127.0.0.1:${port}`,
      redisUrl,
      replicas,
      async restart(name) {
        const i = names.indexOf(name);
        const old = replicas[i];
        if (!old) throw new Error(`no replica ${name}`);
        await old.server.stop();
        const r = await startReplica(name, i);
        replicas[i] = r;
        started.push({ stop: () => r.server.stop() });
        return r;
      },
      async stopRedis() {
        await redis?.stop();
      },
      async startRedis() {
        redis = startRedis(redisPort);
        await listening(redisPort, redis, 'redis-server');
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
