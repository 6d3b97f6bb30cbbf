// Loaded before every test file (package.json "tap"."node-arg"). In CI the property tests run
// on one fixed seed, so main's result does not depend on the draw; elsewhere each run draws a
// new seed (fast-check prints it with any failure, to replay with FC_SEED=<seed>).
import fc from 'fast-check';

const seed = process.env.FC_SEED ?? (process.env.CI ? '20261205' : undefined);
if (seed !== undefined) fc.configureGlobal({ seed: Number(seed) });
