// Turns a model directory into a ready decoder + tokenizer + the facts the service needs
// (EOS ids, context length, chat template), failing start-up with one line on any problem.
import { basename, join } from 'node:path';
import type { KvLayout } from '../core/kv/layout.js';
import { ModelLoadError, readModelDir } from './model-dir.js';
import { OnnxDecoder, type SessionOptions } from './onnx-decoder.js';
import { TextTokenizer } from './tokenizer.js';

export interface ModelInfo {
  /** The name clients pass as `model`: the directory's name. */
  id: string;
  dir: string;
  onnxPath: string;
  layout: KvLayout;
  vocabSize: number;
  contextLength: number;
  eosIds: number[];
  chatTemplate: string | undefined;
}

export interface LoadedModel {
  info: ModelInfo;
  decoder: OnnxDecoder;
  tokenizer: TextTokenizer;
}

type Json = Record<string, unknown>;

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const ids = (v: unknown): number[] => (typeof v === 'number' ? [v] : Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number') : []);

export interface LoadOptions extends SessionOptions {
  /** An ONNX file relative to the directory, e.g. onnx/model_fp16.onnx. */
  onnxFile?: string;
}

export async function loadModel(dir: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const files = readModelDir(dir, options.onnxFile);
  const tokenizerPath = join(files.dir, 'tokenizer.json');
  let tokenizer: TextTokenizer;
  try {
    tokenizer = new TextTokenizer(files.tokenizerJson, files.tokenizerConfig);
  } catch (err) {
    throw new ModelLoadError(tokenizerPath, `not a usable tokenizer (${(err as Error).message})`);
  }
  const genaiModel = (files.genaiConfig.model ?? {}) as Json;
  const decoder = await OnnxDecoder.load(files.onnxPath, options, num(files.config.vocab_size) ?? num(genaiModel.vocab_size));
  if (tokenizer.vocabSize > decoder.vocabSize) {
    await decoder.close();
    throw new ModelLoadError(tokenizerPath, `tokenizer has ${tokenizer.vocabSize} tokens but the model's logits cover only ${decoder.vocabSize}`);
  }

  const eos = new Set([...ids(files.generationConfig.eos_token_id), ...ids(files.config.eos_token_id), ...ids(genaiModel.eos_token_id)]);
  if (eos.size === 0 && tokenizer.eosToken !== undefined) {
    const id = tokenizer.tokenToId(tokenizer.eosToken);
    if (id !== undefined) eos.add(id);
  }
  const tokenizerMax = num(files.tokenizerConfig.model_max_length);
  const contextLength =
    num(files.config.max_position_embeddings) ??
    num(genaiModel.context_length) ??
    (tokenizerMax !== undefined && tokenizerMax < 1e7 ? tokenizerMax : undefined) ??
    2048;
  const template = files.tokenizerConfig.chat_template;

  return {
    decoder,
    tokenizer,
    info: {
      id: basename(files.dir),
      dir: files.dir,
      onnxPath: files.onnxPath,
      layout: decoder.layout,
      vocabSize: decoder.vocabSize,
      contextLength,
      eosIds: [...eos].sort((a, b) => a - b),
      chatTemplate: typeof template === 'string' ? template : undefined,
    },
  };
}
