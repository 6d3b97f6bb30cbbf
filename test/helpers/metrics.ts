// A Metrics instance as the service builds one, for tests that read its definitions (names,
// types, labels) rather than its values: no engine behind it.
import { Metrics } from '../../src/metrics/metrics.js';

export function definedMetrics(): Metrics {
  return new Metrics({
    build: { version: '0.0.0-test', revision: 'test', node: process.versions.node, onnxruntime: 'test' },
    engineStats: async () => undefined,
    ready: () => false,
    requestTimeoutMs: 300_000,
  });
}
