// `npm run fleet:config`: rewrites docker/haproxy/haproxy.cfg (compose) and docker/k8s/haproxy.cfg
// (Kubernetes) from haproxy-config.ts.
import { writeFileSync } from 'node:fs';
import { COMPOSE_HAPROXY, K8S_HAPROXY } from './haproxy-config.js';

writeFileSync(new URL('./haproxy.cfg', import.meta.url), COMPOSE_HAPROXY);
writeFileSync(new URL('../k8s/haproxy.cfg', import.meta.url), K8S_HAPROXY);
