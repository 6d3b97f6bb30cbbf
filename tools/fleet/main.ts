// `npm run fleet -- --replicas 3 [--policy cache-aware|round-robin]`: Redis, N kvserve replicas
// and HAProxy on loopback; prints `fleet ready: <url>` once all answer, stops them all on
// Ctrl-C or SIGTERM. Ports: FLEET_PORT (load balancer, 8000), FLEET_BASE_PORT (replica 1,
// 8001; replica i on FLEET_BASE_PORT + i - 1), FLEET_REDIS_PORT (7379).
import { parseArgs } from 'node:util';
import type { Policy } from '../../docker/haproxy/haproxy-config.js';
import { startFleet } from './fleet.js';

const { values } = parseArgs({
  options: { replicas: { type: 'string', default: '3' }, policy: { type: 'string', default: 'cache-aware' } },
});
const int = (name: string, value: string | undefined, fallback: number): number => {
  const n = value === undefined ? fallback : Number(value);
  if (!Number.isInteger(n) || n <= 0 || n > 65_535) throw new Error(`${name} must be a positive integer, got ${value}`);
  return n;
};
const replicas = int('--replicas', values.replicas, 3);
const policy = values.policy as Policy;
if (policy !== 'cache-aware' && policy !== 'round-robin') throw new Error(`--policy must be cache-aware or round-robin, got ${policy}`);
const port = int('FLEET_PORT', process.env.FLEET_PORT, 8000);
const basePort = int('FLEET_BASE_PORT', process.env.FLEET_BASE_PORT, port + 1);
const redisPort = int('FLEET_REDIS_PORT', process.env.FLEET_REDIS_PORT, 7379);

const fleet = await startFleet({ replicas, port, basePort, redisPort, policy, env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' } });
for (const r of fleet.replicas) console.log(`${r.name}: ${r.url}`);
console.log(`redis: ${fleet.redisUrl}`);
console.log(`fleet ready: ${fleet.url}`);

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await fleet.stop();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
