// Entry for kvserve's worker threads when it runs from its TypeScript sources (tests, tsx
// scripts): registers tsx in the worker, whose loader hooks the parent's do not reach, then
// loads the module named by the worker's first argument (default: the engine worker).
// The built service (dist/) starts worker.js, prefill-worker.js and tokenizer-worker.js directly.
import { register } from 'tsx/esm/api';

register();
await import(process.argv[2] ?? './worker.ts');
