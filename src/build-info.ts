// What this build is: kvserve's version, the source revision, and the Node.js and
// onnxruntime versions it runs on (kvserve_build_info, logs). The revision comes from
// KVSERVE_REVISION (the image sets it at build time) or, in a checkout, from git.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { projectRoot } from './config.js';
import type { BuildInfo } from './metrics/metrics.js';

const require = createRequire(import.meta.url);

function revision(env: NodeJS.ProcessEnv): string {
  if (env.KVSERVE_REVISION) return env.KVSERVE_REVISION;
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'ignore'], timeout: 2000 })
      .toString()
      .trim();
  } catch {
    return 'unknown';
  }
}

export function readBuildInfo(env: NodeJS.ProcessEnv = process.env): BuildInfo {
  const pkg = JSON.parse(readFileSync(`${projectRoot}/package.json`, 'utf8')) as { version: string };
  const ort = require('onnxruntime-node/package.json') as { version: string };
  return { version: pkg.version, revision: revision(env), node: process.versions.node, onnxruntime: ort.version };
}
