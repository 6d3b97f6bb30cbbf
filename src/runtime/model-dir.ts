// Finds and reads a decoder model directory: the Hugging Face Optimum / Transformers.js
// layout (onnx/model.onnx) or the onnxruntime-genai layout (model.onnx[.data] at the root).
// JSON side files are read only for what the ONNX graph itself cannot say.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

/** Start-up failure with one line naming the file and the problem. */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${displayPath(file)}: ${problem}`);
  }
}

function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel.startsWith('..') ? file : rel;
}

type Json = Record<string, unknown>;

export interface ModelFiles {
  dir: string;
  onnxPath: string;
  tokenizerJson: Json;
  tokenizerConfig: Json;
  /** config.json, generation_config.json and genai_config.json when present, else {}. */
  config: Json;
  generationConfig: Json;
  genaiConfig: Json;
}

function readJson(file: string, required: boolean): Json {
  if (!existsSync(file)) {
    if (required) throw new ModelLoadError(file, 'file not found');
    return {};
  }
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(file, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ModelLoadError(file, 'expected a JSON object');
  }
  return value as Json;
}

/**
 * Reads a model directory. `onnxFile` (relative to the directory) picks a variant such as
 * `onnx/model_fp16.onnx`; otherwise genai_config's decoder file, onnx/model.onnx, then model.onnx.
 */
export function readModelDir(dirPath: string, onnxFile?: string): ModelFiles {
  const dir = resolve(dirPath);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new ModelLoadError(dir, 'model directory not found');
  }
  const genaiConfig = readJson(join(dir, 'genai_config.json'), false);
  const genaiDecoder = (genaiConfig.model as Json | undefined)?.decoder as Json | undefined;
  const candidates = onnxFile ? [onnxFile] : [...(typeof genaiDecoder?.filename === 'string' ? [genaiDecoder.filename] : []), 'onnx/model.onnx', 'model.onnx'];
  const onnxPath = candidates.map((c) => join(dir, c)).find((p) => existsSync(p));
  if (!onnxPath) {
    throw new ModelLoadError(join(dir, candidates[0] ?? 'model.onnx'), `no ONNX model found (looked for ${candidates.join(', ')})`);
  }
  return {
    dir,
    onnxPath,
    tokenizerJson: readJson(join(dir, 'tokenizer.json'), true),
    tokenizerConfig: readJson(join(dir, 'tokenizer_config.json'), false),
    config: readJson(join(dir, 'config.json'), false),
    generationConfig: readJson(join(dir, 'generation_config.json'), false),
    genaiConfig,
  };
}
