// `npm run fleet:config`: rewrites docker/haproxy/haproxy.cfg from haproxy-config.ts.
import { writeFileSync } from 'node:fs';
import { COMPOSE_HAPROXY } from './haproxy-config.js';

writeFileSync(new URL('./haproxy.cfg', import.meta.url), COMPOSE_HAPROXY);
