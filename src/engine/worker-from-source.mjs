// Entry for the engine worker when kvserve runs from its TypeScript sources (tests, tsx
// scripts): registers tsx in the worker, whose loader hooks the parent's do not reach.
// The built service (dist/) starts worker.js directly.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
