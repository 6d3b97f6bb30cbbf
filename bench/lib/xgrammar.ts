// Loads @mlc-ai/web-xgrammar in Node 20. Its package says "type": "module" but ships a UMD
// bundle that calls require(), so a plain import throws; evaluating the bundle as CommonJS works
// (the WebAssembly is inlined: nothing is fetched).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';

// The slice of the package's API the benchmark uses (its own .d.ts types a class hierarchy we
// cannot import as values through this shim).
export interface XgMatcher {
  acceptToken(id: number): boolean;
  getNextTokenBitmask(): Promise<Int32Array>;
  isTerminated(): boolean;
  dispose(): void;
}
export interface Xgrammar {
  TokenizerInfo: { createTokenizerInfo(vocab: string[], type: string, prependSpace: boolean, size: number, stop: number[]): Promise<unknown> };
  GrammarCompiler: {
    createGrammarCompiler(
      info: unknown,
      cache?: boolean,
    ): Promise<{
      compileJSONSchema(schema: string, anyWhitespace?: boolean, indent?: number, separators?: [string, string], strict?: boolean): Promise<unknown>;
      compileBuiltinJSONGrammar(): Promise<unknown>;
    }>;
  };
  GrammarMatcher: { createGrammarMatcher(compiled: unknown): Promise<XgMatcher> };
}

export function loadXgrammar(): Xgrammar {
  const require = createRequire(import.meta.url);
  const path = require.resolve('@mlc-ai/web-xgrammar');
  const module = { exports: {} as Record<string, unknown> };
  const body = readFileSync(path, 'utf8');
  new Function('exports', 'require', 'module', '__filename', '__dirname', body)(module.exports, createRequire(path), module, path, dirname(path));
  return module.exports as unknown as Xgrammar;
}

/** Sets logits of ids whose bit is 0 to -Infinity (xgrammar's bitmask: bit set = allowed). */
export function applyBitmask(bitmask: Int32Array, logits: Float32Array): void {
  const n = logits.length;
  for (let w = 0; w < bitmask.length; w++) {
    const bits = bitmask[w]!;
    if (bits === -1) continue;
    const base = w << 5;
    for (let b = 0; b < 32 && base + b < n; b++) if (((bits >>> b) & 1) === 0) logits[base + b] = -Infinity;
  }
}
